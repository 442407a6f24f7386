"""boto3 clients, one set per process.

Endpoints, credentials and region come from boto3's standard configuration
(``AWS_ENDPOINT_URL_<SERVICE>``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``...), never from our
settings: the local stack is reached exactly as AWS is. Clients are cached per process id
because a client created before Celery's prefork must not be shared with the children.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config

# Standard retry mode: exponential backoff with jitter on throttling and 5xx, as AWS advises.
_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    max_pool_connections=64,
    connect_timeout=5,
    read_timeout=30,
    tcp_keepalive=True,
)

_lock = threading.Lock()
_clients: dict[tuple[int, str], Any] = {}


def client(service: str) -> Any:
    """A boto3 client for ``service``, shared by the threads of this process."""
    key = (os.getpid(), service)
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = _clients[key] = boto3.session.Session().client(service, config=_CONFIG)
        return found


def reset_clients() -> None:
    """Forget the clients, so the next ones read the environment again (a test module that
    moves this process to another stack)."""
    with _lock:
        _clients.clear()
