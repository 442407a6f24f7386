"""Running the intake under uvicorn: one process, or several sharing one listening socket."""

from __future__ import annotations

import signal
from types import FrameType

import uvicorn
from uvicorn.supervisors import Multiprocess

from flashsale import aws
from flashsale.logs import configure_logging
from flashsale.settings import get_settings
from intake.app import create_app
from intake.services import build_services

APP_FACTORY = "intake.server:app_from_settings"
LISTEN_BACKLOG = 2048


def app_from_settings() -> object:
    """uvicorn's app factory, called in each worker process: settings and AWS clients are the
    process's own."""
    configure_logging()
    settings = get_settings()
    services = build_services(settings, sqs=aws.client("sqs"), dynamodb=aws.client("dynamodb"))
    return create_app(services, settings)


def _after_graceful_shutdown(signum: int, frame: FrameType | None) -> None:
    """Runs once uvicorn has shut down and restored the handlers (or before it has started)."""
    raise SystemExit(0)


def serve(host: str, port: int, *, workers: int = 1, log_level: str = "info") -> None:
    """Bind, then serve until SIGTERM/SIGINT: uvicorn stops accepting, lets the requests in
    progress finish (each waits at most the enqueue timeout), then the app's lifespan flushes
    the intake's buffer to the queue.

    The socket is bound before the app starts, so ``intake.ready`` (logged at the end of the
    app's startup) means connections are being taken.
    """
    settings = get_settings()
    config = uvicorn.Config(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=log_level,
        backlog=LISTEN_BACKLOG,
        limit_concurrency=settings.intake_max_connections,
        timeout_graceful_shutdown=int(settings.intake_enqueue_timeout_seconds) + 5,
    )
    # uvicorn handles SIGTERM/SIGINT itself, then re-raises the signal once it has shut down
    # so the process ends "as that signal would": with these handlers in place, a graceful
    # shutdown exits 0 instead, as the Celery workers and the relay do.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _after_graceful_shutdown)
    sock = config.bind_socket()
    if workers > 1:
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])
