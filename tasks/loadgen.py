"""A command-line load generator: many buyers, one event, through the real intake.

``python -m tasks.loadgen --event E --requests 20000`` sends a contested burst: mostly valid
requests, some repeated request ids (double clicks, client retries) and a few malformed ones,
which the intake refuses at the edge. Run it against the local stack (``make stack-up``, then
``eval "$(python -m infra.local env)"``) or against AWS with the real stack outputs.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.progress import Progress

from flashsale import aws
from flashsale.settings import get_settings
from tasks.exceptions import InvalidPurchaseRequest
from tasks.intake import Accepted, Intake

# Kinds of malformed request a buggy or hostile client sends.
_MALFORMED: list[dict[str, Any]] = [
    {"event_id": "", "buyer_id": "b", "quantity": 1, "request_id": "r"},
    {"event_id": "e", "buyer_id": "b", "quantity": 0, "request_id": "r"},
    {"event_id": "e", "buyer_id": "b", "quantity": -3, "request_id": "r"},
    {"event_id": "e", "buyer_id": "b", "quantity": "two", "request_id": "r"},
    {"event_id": "e", "buyer_id": "b", "quantity": 10**9, "request_id": "r"},
    {"event_id": "e", "buyer_id": "b\x00", "quantity": 1, "request_id": "r"},
    {"event_id": "e", "buyer_id": "b", "quantity": 1},
    {"event_id": "e", "buyer_id": "b", "quantity": 1, "request_id": "r", "admin": True},
]

# Most buyers want one or two seats; a few want a handful.
_QUANTITIES = [1, 1, 1, 1, 1, 1, 2, 2, 3, 4]


@dataclass
class Burst:
    """What the generator sent and what the intake answered."""

    sent: int = 0
    invalid: int = 0
    duplicates: int = 0
    accepted: dict[str, Accepted] = field(default_factory=dict)  # by order id


def requests(
    event_id: str, count: int, *, duplicates: int, malformed: int, seed: int, first: int = 0
) -> Iterator[dict[str, Any]]:
    """``count`` requests in arrival order: unique buyers (numbered from ``first``, each with
    an e-mail address, every fifth with a phone too), repeats and malformed mixed in."""
    rng = random.Random(seed)
    unique = count - duplicates - malformed
    if unique < 1:
        raise ValueError("a burst needs at least one new buyer besides repeats and malformed")
    kinds = ["new"] * unique + ["dup"] * duplicates + ["bad"] * malformed
    # Repeats and malformed ones arrive among the others, never before the first buyer (so a
    # repeat always has someone to repeat).
    rest = kinds[1:]
    rng.shuffle(rest)
    issued: list[dict[str, Any]] = []
    for kind in [kinds[0], *rest]:
        if kind == "new":
            n = first + len(issued)
            request = {
                "event_id": event_id,
                "buyer_id": f"buyer-{n}",
                "quantity": rng.choice(_QUANTITIES),
                "request_id": f"{event_id}.{n}",
                "email": f"buyer-{n}@{event_id}.example.com",
            }
            if n % 5 == 0:
                request["phone"] = f"+1555{n % 10_000_000:07d}"
            issued.append(request)
            yield request
        elif kind == "dup":
            yield dict(rng.choice(issued))
        else:
            yield dict(rng.choice(_MALFORMED))


def fire(intake: Intake, burst_requests: list[dict[str, Any]], progress: Progress | None) -> Burst:
    """Submit every request through the intake, counting answers; flushes at the end."""
    burst = Burst()
    task = progress.add_task("buyers clicking Buy", total=len(burst_requests)) if progress else None
    for n, raw in enumerate(burst_requests, 1):
        burst.sent += 1
        try:
            accepted = intake.submit(raw)
        except InvalidPurchaseRequest:
            burst.invalid += 1
        else:
            if accepted.order_id in burst.accepted:
                burst.duplicates += 1
            else:
                burst.accepted[accepted.order_id] = accepted
        if progress and task is not None and n % 500 == 0:
            progress.update(task, completed=n)
    intake.flush()
    if progress and task is not None:
        progress.update(task, completed=len(burst_requests))
    return burst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--event", required=True)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--duplicates", type=int, default=0)
    parser.add_argument("--malformed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    settings = get_settings()
    intake = Intake(
        aws.client("sqs"),
        settings.purchases_queue_url,
        batch_size=settings.purchase_batch_size,
        linger_ms=settings.intake_linger_ms,
        max_per_request=settings.max_tickets_per_request,
    )
    burst_requests = list(
        requests(
            args.event,
            args.requests,
            duplicates=args.duplicates,
            malformed=args.malformed,
            seed=args.seed,
        )
    )
    with Progress() as progress:
        burst = fire(intake, burst_requests, progress)
    intake.close()
    print(
        f"sent {burst.sent}, accepted {len(burst.accepted)}, repeated {burst.duplicates}, "
        f"refused at the intake {burst.invalid}, SQS messages {intake.messages_sent}"
    )


if __name__ == "__main__":
    main()
