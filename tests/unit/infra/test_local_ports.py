"""Port checks of the local stack: free ports, and which process holds a listening socket."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from infra.local import ports


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def test_port_is_free__false_while_something_listens(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    assert not ports.port_is_free("127.0.0.1", port)
    listener.close()
    assert ports.port_is_free("127.0.0.1", port)


def test_listened_by__names_the_process_holding_the_socket(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    assert ports.listened_by([os.getpid()], port)
    assert not ports.listened_by([1 << 22], port)  # above pid_max: no such process


def test_listen_addresses__reports_loopback_binding(listener: socket.socket) -> None:
    assert ports.listen_addresses(listener.getsockname()[1]) == {"127.0.0.1"}


def test_free_port__can_be_bound() -> None:
    assert ports.port_is_free("127.0.0.1", ports.free_port())
