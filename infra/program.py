"""Run the Pulumi program in-process, without the CLI, under a ``pulumi.runtime.Mocks``.

The unit tests (plain mocks) and the local provisioner (mocks that create each resource in the
emulators) both come through here, so they run the very program ``pulumi up`` runs, with the
config of the committed ``Pulumi.<stack>.yaml``.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import runpy
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime.stack import Stack

from flashsale.names import PROJECT

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROGRAM = PROJECT_DIR / "infra" / "__main__.py"


def stack_files() -> list[Path]:
    """Every committed stack config, ``Pulumi.<stack>.yaml``."""
    return sorted(PROJECT_DIR.glob("Pulumi.*.yaml"))


def stack_name(path: Path) -> str:
    return path.name.removeprefix("Pulumi.").removesuffix(".yaml")


def load_stack_config(stack: str) -> tuple[dict[str, str], list[str]]:
    """The stack's ``config:`` as the CLI hands it to a program: strings, objects as JSON.

    Encrypted values (``{secure: ...}``) need the CLI's secrets provider, so they are left out
    but still marked secret; ``pulumi.Config`` then falls back to ``PULUMI_CONFIG_<KEY>`` in
    the environment, which is how to supply a secret to an in-process run.
    """
    path = PROJECT_DIR / f"Pulumi.{stack}.yaml"
    document = yaml.safe_load(path.read_text()) or {}
    values: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in (document.get("config") or {}).items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            secret_keys.append(key)
        else:
            values[key] = value if isinstance(value, str) else json.dumps(value)
    return values, secret_keys


def run_program(mocks: pulumi.runtime.Mocks, stack: str) -> dict[str, Any]:
    """Run ``infra/__main__.py`` for ``stack`` under ``mocks``; return its resolved exports.

    Each run gets an empty ``contextvars`` context, because the SDK keeps its root stack
    resource, config and settings in context variables: runs never see each other's state.
    """
    return contextvars.Context().run(_run, mocks, stack)


def _run(mocks: pulumi.runtime.Mocks, stack: str) -> dict[str, Any]:
    _ensure_event_loop()
    pulumi.runtime.set_all_config(*load_stack_config(stack))
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False)
    exports: dict[str, Any] = {}

    @pulumi.runtime.test
    def program() -> pulumi.Output[None]:
        runpy.run_path(str(PROGRAM), run_name="__main__")
        root = pulumi.runtime.get_root_resource()
        if not isinstance(root, Stack):
            raise RuntimeError("the mocked runtime has no root stack resource")
        return pulumi.Output.all(**root.outputs).apply(exports.update)

    program()
    return exports


def _ensure_event_loop() -> None:
    """The SDK's mocks call ``asyncio.get_event_loop()``, which raises once an earlier
    ``asyncio.run`` in this thread has finished (it leaves "no current loop" set)."""
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
