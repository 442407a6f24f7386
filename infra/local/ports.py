"""Who listens on a TCP port: free-port checks and "is it really our process" via ``/proc``.

A health endpoint alone cannot tell our emulator from another one on the same port (LocalStack
even prints ``Ready.`` when its gateway failed to bind), so ``up`` and ``status`` also check that
the listening socket belongs to the process group they started.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
_TCP_LISTEN = "0A"


def port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (nothing listens there, nor on ``0.0.0.0``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option servers use, so a port in TIME_WAIT from our last run counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free right now (for tests and ad-hoc stacks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def listening_inodes(port: int) -> set[int]:
    """Socket inodes of TCP (v4 and v6) sockets listening on ``port``, on any address."""
    inodes: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is "HEXADDR:HEXPORT"; st is the 4th field; inode the 10th.
            listening = len(fields) > 9 and fields[3] == _TCP_LISTEN
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` has open (empty if we may not look)."""
    inodes: set[int] = set()
    fd_dir = PROC / str(pid) / "fd"
    with contextlib.suppress(OSError):
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                target = os.readlink(fd_dir / fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def listened_by(pids: Iterable[int], port: int) -> bool:
    """Whether one of ``pids`` holds the socket listening on ``port``."""
    listening = listening_inodes(port)
    return bool(listening) and any(listening & socket_inodes(pid) for pid in pids)


def listen_addresses(port: int) -> set[str]:
    """The local IPv4 addresses (dotted) with a socket listening on ``port``."""
    addresses: set[str] = set()
    with contextlib.suppress(OSError):
        for line in (PROC / "net" / "tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == _TCP_LISTEN:
                hex_addr, hex_port = fields[1].split(":")
                if int(hex_port, 16) == port:
                    # /proc shows the address as a little-endian 32-bit hex number.
                    addresses.add(socket.inet_ntoa(bytes.fromhex(hex_addr)[::-1]))
    return addresses
