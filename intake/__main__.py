"""``python -m intake --host 127.0.0.1 --port 8080 [--workers 1]``: the HTTP intake.

``python -m intake --write-openapi [PATH]`` writes the OpenAPI document (by default to the
checked-in ``intake/openapi.json``) and exits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from intake.openapi import CHECKED_IN, write_openapi


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m intake", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the socket; first come, first served holds per process (README)",
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--write-openapi", nargs="?", const=CHECKED_IN, type=Path, metavar="PATH", default=None
    )
    args = parser.parse_args(argv)
    if args.write_openapi is not None:
        print(f"wrote {write_openapi(args.write_openapi)}")
        return
    from intake.server import serve  # uvicorn and the AWS clients only when serving

    serve(args.host, args.port, workers=args.workers, log_level=args.log_level)


if __name__ == "__main__":
    main()
