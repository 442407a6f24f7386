"""LocalStack's own virtualenv under the stack directory, created on first ``up``.

LocalStack pins boto3/botocore and much else, so it cannot share the application's virtualenv.
It is installed from PyPI against a frozen constraints file (a set that installed and started
here), and a stamp file named after a hash of that file and the requirements marks a complete
install: an interrupted install is redone from scratch, a changed constraints file reinstalls.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONSTRAINTS_FILE = HERE / "localstack-constraints.txt"
BOOT_SCRIPT = HERE / "localstack_boot.py"
REQUIREMENTS = ("localstack-core[runtime]==4.9.2", "cbor2", "service_identity")
_STAMP_PREFIX = ".flashsale-installed-"


class InstallError(RuntimeError):
    """Creating LocalStack's virtualenv or installing into it failed (see the install log)."""


def python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _stamp(venv: Path) -> Path:
    digest = hashlib.sha256(CONSTRAINTS_FILE.read_bytes())
    digest.update("\n".join(REQUIREMENTS).encode())
    return venv / f"{_STAMP_PREFIX}{digest.hexdigest()[:16]}"


def is_installed(venv: Path) -> bool:
    return _stamp(venv).is_file() and python(venv).is_file()


def _run(command: list[str], log_file: Path) -> None:
    with log_file.open("ab") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise InstallError(
            f"{' '.join(command[:4])} ... exited with {result.returncode}; see {log_file}"
        )


def ensure_venv(venv: Path, log_file: Path) -> bool:
    """Create and install the virtualenv unless a complete install is there; True if it ran."""
    if is_installed(venv):
        return False
    venv.parent.mkdir(parents=True, exist_ok=True)
    # The virtualenv may be shared by several stack directories: one installer at a time.
    with venv.with_name(f".{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_installed(venv):
            return False
        _install(venv, log_file)
    return True


def _install(venv: Path, log_file: Path) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    if python(venv).is_file() and not any(venv.glob(f"{_STAMP_PREFIX}*")):
        # No stamp at all: an install was interrupted; start over rather than trust it.
        shutil.rmtree(venv)
    if not python(venv).is_file():
        # sys.executable may be a venv's python; `-m venv` builds on the base interpreter.
        _run([sys.executable, "-m", "venv", str(venv)], log_file)
    pip = [str(python(venv)), "-m", "pip", "install", "--disable-pip-version-check"]
    _run([*pip, "-c", str(CONSTRAINTS_FILE), *REQUIREMENTS], log_file)
    for old in venv.glob(f"{_STAMP_PREFIX}*"):
        old.unlink()
    _stamp(venv).touch()
