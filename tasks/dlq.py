"""``python -m tasks.dlq list|show|redrive``: inspect dead letters and send them back.

``list`` shows each queue role's DLQ and how many messages it holds; ``show ROLE`` prints a
few dead letters, decoding Celery's message envelope where there is one; ``redrive ROLE``
moves every dead letter back to the queue it came from, once the cause is fixed.

Redrive re-runs work that failed, and possibly work that was done but not acknowledged (a
worker killed between its side effect and the delete). That is safe because every consumer is
idempotent: a purchase batch is decided once per order id, whatever delivers it again.

Standard queues are redriven by SQS itself (``StartMessageMoveTask``). The FIFO queue is not:
a move task keeps each message's deduplication id, so a message redriven within five minutes
of its first send is dropped as a duplicate without an error (seen on LocalStack, and it is
what the FIFO deduplication window means). FIFO dead letters are therefore received, sent
again with the same body and group and a new deduplication id, and deleted from the DLQ only
after the send succeeded; the group's order is kept.

Exit status: 0 done, 1 a redrive moved less than it found, 2 an AWS error.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from botocore.exceptions import ClientError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from flashsale.names import QueueRole
from tasks.operator import (
    Operator,
    format_age,
    oldest_message_age,
    queue_arn,
    queue_depth,
    run_command,
)

log = structlog.get_logger(__name__)

# ``show`` hides what it reads only briefly, and releases it at once when done.
SHOW_VISIBILITY_SECONDS = 5
# A FIFO redrive holds a receive's messages while it sends and deletes them (ten at most).
REDRIVE_VISIBILITY_SECONDS = 30
RECEIVE_WAIT_SECONDS = 1
MOVE_TASK_POLL_SECONDS = 0.5
DEFAULT_REDRIVE_TIMEOUT_SECONDS = 600.0
MAX_DEDUP_ID_LENGTH = 128  # SQS's limit on MessageDeduplicationId
PREVIEW_CHARS = 80
KWARGS_CHARS = 120
_SENDABLE_ATTRIBUTE_FIELDS = ("DataType", "StringValue", "BinaryValue")
IN_PROGRESS = {"RUNNING", "CANCELLING"}  # ListMessageMoveTasks statuses of an unfinished task


# --- decoding a body -------------------------------------------------------------------------


@dataclass(frozen=True)
class BodySummary:
    """What a dead letter's body says, every field printable and short.

    ``task`` is set for a Celery message (with its id and a brief of its kwargs); otherwise
    ``raw`` holds the first characters of the body.
    """

    task: str | None = None
    task_id: str | None = None
    kwargs: str | None = None
    raw: str | None = None


def summarize_body(body: str | bytes) -> BodySummary:
    """Decode a Celery-on-SQS body (base64 JSON envelope, task name and id in its headers, the
    task's ``[args, kwargs, embed]`` base64 JSON again); anything else is previewed raw.

    Never raises: dead letters are by definition what producers got wrong, so invalid base64,
    JSON, UTF-8, lone surrogates or absurd nesting only mean "not a Celery message".
    """
    try:
        summary = _celery_summary(body)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        summary = None
    return summary or BodySummary(raw=printable(body, PREVIEW_CHARS))


def printable(value: object, limit: int) -> str:
    """``value`` as text safe for any terminal: at most ``limit`` characters (then "…"), control
    characters and lone surrogates escaped, so neither rich nor the output encoding can fail."""
    if isinstance(value, bytes):
        text = value.decode("utf-8", "backslashreplace")
    else:
        text = value if isinstance(value, str) else repr(value)
    clipped = text[:limit]
    clipped = clipped.encode("utf-8", "backslashreplace").decode("utf-8")
    escaped = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in clipped)
    return escaped + ("…" if len(text) > limit else "")


def _celery_summary(body: str | bytes) -> BodySummary | None:
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    # kombu's SQS transport base64-encodes the envelope; plain JSON is accepted too.
    envelope = _json_object(_b64_text(text)) or _json_object(text)
    if envelope is None:
        return None
    headers = envelope.get("headers")
    inner = _inner_body(envelope)
    if isinstance(headers, dict) and isinstance(headers.get("task"), str):  # protocol 2
        task, task_id = headers["task"], headers.get("id")
        kwargs = inner[1] if isinstance(inner, list) and len(inner) == 3 else inner
    elif isinstance(inner, dict) and isinstance(inner.get("task"), str):  # protocol 1
        task, task_id, kwargs = inner["task"], inner.get("id"), inner.get("kwargs")
    else:
        return None
    return BodySummary(
        task=printable(task, PREVIEW_CHARS),
        task_id=None if task_id is None else printable(str(task_id), PREVIEW_CHARS),
        kwargs=printable(json.dumps(kwargs, default=repr), KWARGS_CHARS),
    )


def _b64_text(text: str) -> str | None:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, non-ASCII input
        return None


def _json_object(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _inner_body(envelope: dict[str, Any]) -> Any:
    body = envelope.get("body")
    if not isinstance(body, str):
        return body
    properties = envelope.get("properties")
    encoding = properties.get("body_encoding") if isinstance(properties, dict) else None
    decoded = _b64_text(body) if encoding == "base64" else body
    if decoded is None:
        return None
    try:
        return json.loads(decoded)
    except ValueError:
        return None


# --- reading and moving dead letters -------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """One received dead letter, with what ``show`` prints and what a FIFO redrive resends."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int | None
    sent_at: datetime | None
    group_id: str | None
    dedup_id: str | None
    message_attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_sqs(cls, message: dict[str, Any]) -> DeadLetter:
        attributes = message.get("Attributes", {})
        sent_ms = attributes.get("SentTimestamp")
        count = attributes.get("ApproximateReceiveCount")
        return cls(
            message_id=message["MessageId"],
            receipt_handle=message["ReceiptHandle"],
            body=message.get("Body", ""),
            receive_count=int(count) if count is not None else None,
            sent_at=datetime.fromtimestamp(int(sent_ms) / 1000, UTC) if sent_ms else None,
            group_id=attributes.get("MessageGroupId"),
            dedup_id=attributes.get("MessageDeduplicationId"),
            message_attributes=message.get("MessageAttributes", {}),
        )

    def redrive_dedup_id(self) -> str:
        """A deduplication id the source queue has not seen: the first send's id would make
        the resend a silent duplicate. Derived from this DLQ message's id, so resending it
        again (its delete failed) is deduplicated instead of processed twice."""
        candidate = f"{self.dedup_id or 'none'}:redrive:{self.message_id}"
        if len(candidate) <= MAX_DEDUP_ID_LENGTH:
            return candidate
        return f"redrive:{hashlib.sha256(candidate.encode()).hexdigest()}"

    def resend_attributes(self) -> dict[str, Any]:
        """The message attributes as ``SendMessage`` takes them (received ones carry extra,
        empty list fields)."""
        return {
            name: {
                k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")
            }
            for name, value in self.message_attributes.items()
        }


def receive_dead_letters(
    sqs: Any, dlq_url: str, *, limit: int, visibility_seconds: int
) -> list[DeadLetter]:
    """Up to ``limit`` distinct dead letters, each hidden for ``visibility_seconds``.

    Stops at the limit or when a receive brings nothing new. A FIFO DLQ returns no more of a
    message group while some of it is in flight, so a group shows at most one receive's worth.
    """
    seen: dict[str, DeadLetter] = {}
    while len(seen) < limit:
        response = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=min(10, limit - len(seen)),
            VisibilityTimeout=visibility_seconds,
            WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        fresh = [m for m in response.get("Messages", []) if m["MessageId"] not in seen]
        if not fresh:
            break
        for message in fresh:
            seen[message["MessageId"]] = DeadLetter.from_sqs(message)
    return list(seen.values())


def release(sqs: Any, queue_url: str, letters: list[DeadLetter]) -> None:
    """Make ``letters`` visible again now (best effort: the visibility timeout ends anyway)."""
    for chunk in _chunks(letters, 10):
        response = sqs.change_message_visibility_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(n), "ReceiptHandle": letter.receipt_handle, "VisibilityTimeout": 0}
                for n, letter in enumerate(chunk)
            ],
        )
        for failed in response.get("Failed", []):
            log.warning("dlq.release_failed", queue_url=queue_url, error=failed.get("Message"))


@dataclass(frozen=True)
class RedriveResult:
    found: int
    moved: int
    status: str  # COMPLETED, or why not: FAILED, CANCELLED, TIMED OUT, SEND FAILED
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "COMPLETED" and self.moved >= self.found


def redrive_standard(
    sqs: Any,
    dlq_url: str,
    *,
    max_per_second: int | None,
    timeout: float,
    on_progress: Callable[[int, int], None],
) -> RedriveResult:
    """Move every dead letter back to its source queue with ``StartMessageMoveTask`` and wait.

    SQS allows one active move task per DLQ, so the newest task listed is the one started here.
    """
    source_arn = queue_arn(sqs, dlq_url)
    start: dict[str, Any] = {"SourceArn": source_arn}  # no DestinationArn: the original source
    if max_per_second is not None:
        start["MaxNumberOfMessagesPerSecond"] = max_per_second
    sqs.start_message_move_task(**start)
    deadline = time.monotonic() + timeout
    while True:
        results = sqs.list_message_move_tasks(SourceArn=source_arn, MaxResults=1)["Results"]
        task = results[0] if results else {"Status": "RUNNING"}
        moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
        found = int(task.get("ApproximateNumberOfMessagesToMove", moved))
        on_progress(moved, found)
        if task["Status"] not in IN_PROGRESS:
            return RedriveResult(found, moved, task["Status"], task.get("FailureReason", ""))
        if time.monotonic() > deadline:
            return RedriveResult(found, moved, "TIMED OUT", "the move task is still running")
        time.sleep(MOVE_TASK_POLL_SECONDS)


def redrive_fifo(
    sqs: Any,
    dlq_url: str,
    source_url: str,
    *,
    max_per_second: int | None,
    timeout: float,
    on_progress: Callable[[int, int], None],
) -> RedriveResult:
    """Resend each FIFO dead letter to ``source_url`` with a new deduplication id, then delete
    it from the DLQ; stops at the first failed send, leaving the rest (in order) in the DLQ.

    Moves at most what the DLQ held when it started, so a message that fails again and
    returns to the DLQ meanwhile is not redriven in a loop.
    """
    found = queue_depth(sqs, dlq_url).total
    moved = 0
    started = time.monotonic()
    on_progress(moved, found)
    while moved < found:
        if time.monotonic() - started > timeout:
            return RedriveResult(found, moved, "TIMED OUT")
        letters = receive_dead_letters(
            sqs,
            dlq_url,
            limit=min(10, found - moved),
            visibility_seconds=REDRIVE_VISIBILITY_SECONDS,
        )
        if not letters:
            break
        sent: list[DeadLetter] = []
        failure = ""
        for letter in letters:
            if max_per_second:
                _pace(started, moved, max_per_second)
            try:
                sqs.send_message(
                    QueueUrl=source_url,
                    MessageBody=letter.body,
                    MessageGroupId=letter.group_id or "redrive",
                    MessageDeduplicationId=letter.redrive_dedup_id(),
                    **(
                        {"MessageAttributes": letter.resend_attributes()}
                        if letter.message_attributes
                        else {}
                    ),
                )
            except ClientError as exc:
                failure = f"{letter.message_id}: {exc}"
                break
            sent.append(letter)
            moved += 1
            on_progress(moved, found)
        _delete(sqs, dlq_url, sent)
        if failure:
            release(sqs, dlq_url, letters[len(sent) :])
            return RedriveResult(found, moved, "SEND FAILED", failure)
    return RedriveResult(found, moved, "COMPLETED")


def _pace(started: float, moved: int, per_second: int) -> None:
    """Hold the rate at ``per_second`` messages a second (a rate limit, not a wait for state)."""
    ahead = started + moved / per_second - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)


def _delete(sqs: Any, queue_url: str, letters: list[DeadLetter]) -> None:
    for chunk in _chunks(letters, 10):
        response = sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(n), "ReceiptHandle": letter.receipt_handle}
                for n, letter in enumerate(chunk)
            ],
        )
        # It was sent already; received again, it is resent with the same deduplication id
        # and dropped by SQS as a duplicate, then deleted.
        for failed in response.get("Failed", []):
            log.warning("dlq.delete_failed", queue_url=queue_url, error=failed.get("Message"))


def _chunks(items: list[DeadLetter], size: int) -> Iterator[list[DeadLetter]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- commands --------------------------------------------------------------------------------


_COUNT_COLUMNS = {"dead letters", "in flight"}


def list_dlqs(ops: Operator, args: argparse.Namespace) -> int:
    table = Table(title="dead-letter queues")
    for column in ("role", "type", "dead letters", "in flight", "oldest", "DLQ URL"):
        table.add_column(
            column, justify="right" if column in {"dead letters", "in flight"} else "left"
        )
    for role in QueueRole:
        url = ops.settings.dlq_url(role)
        depth = queue_depth(ops.sqs, url)
        table.add_row(
            role.value,
            "FIFO" if role.fifo else "standard",
            Text(str(depth.total), style="red" if depth.total else "green"),
            str(depth.in_flight),
            format_age(oldest_message_age(ops.cloudwatch, url)),
            Text(url, overflow="fold"),
        )
    ops.console.print(table)
    return 0


def show(ops: Operator, args: argparse.Namespace) -> int:
    role: QueueRole = args.role
    url = ops.settings.dlq_url(role)
    letters = receive_dead_letters(
        ops.sqs, url, limit=args.limit, visibility_seconds=SHOW_VISIBILITY_SECONDS
    )
    try:
        ops.console.print(_letters_table(role, letters, queue_depth(ops.sqs, url).total))
    finally:
        release(ops.sqs, url, letters)
    return 0


def _letters_table(role: QueueRole, letters: list[DeadLetter], depth: int) -> Table:
    table = Table(
        title=f"{role.value} DLQ: {len(letters)} shown, {depth} in the queue",
        caption="task and id from a Celery message's headers; otherwise the body's first bytes",
    )
    columns = ["message id", "receives", "sent (UTC)"]
    columns += ["group"] if role.fifo else []
    columns += ["task", "task id", "kwargs / body"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for letter in letters:
        summary = summarize_body(letter.body)
        row = [
            letter.message_id,
            "-" if letter.receive_count is None else str(letter.receive_count),
            letter.sent_at.strftime("%Y-%m-%d %H:%M:%S") if letter.sent_at else "-",
        ]
        row += [printable(letter.group_id or "-", PREVIEW_CHARS)] if role.fifo else []
        row += [summary.task or "-", summary.task_id or "-", summary.kwargs or summary.raw or ""]
        table.add_row(*(Text(cell) for cell in row))
    return table


def redrive(ops: Operator, args: argparse.Namespace) -> int:
    role: QueueRole = args.role
    dlq_url, source_url = ops.settings.dlq_url(role), ops.settings.queue_url(role)
    columns = (
        TextColumn(f"redrive {role.value}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=ops.console) as progress:
        bar = progress.add_task("redrive", total=None)

        def on_progress(moved: int, found: int) -> None:
            progress.update(bar, completed=moved, total=found)

        if role.fifo:
            result = redrive_fifo(
                ops.sqs,
                dlq_url,
                source_url,
                max_per_second=args.max_per_second,
                timeout=args.timeout,
                on_progress=on_progress,
            )
        else:
            result = redrive_standard(
                ops.sqs,
                dlq_url,
                max_per_second=args.max_per_second,
                timeout=args.timeout,
                on_progress=on_progress,
            )
    style = "green" if result.ok else "red"
    ops.console.print(
        Text(
            f"{role.value}: moved {result.moved} of {result.found} dead letters back to "
            f"{source_url} ({result.status}{': ' + result.reason if result.reason else ''})",
            style=style,
        )
    )
    return 0 if result.ok else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.dlq",
        description="Inspect dead letters and redrive them to their source queue.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="each role's DLQ, its depth and oldest message").set_defaults(
        run=list_dlqs
    )
    roles = [role.value for role in QueueRole]
    show_cmd = commands.add_parser("show", help="print dead letters (hidden 5 s, then released)")
    show_cmd.add_argument("role", type=QueueRole, choices=list(QueueRole), metavar="|".join(roles))
    show_cmd.add_argument("--limit", type=_positive, default=10, help="default %(default)s")
    show_cmd.set_defaults(run=show)
    redrive_cmd = commands.add_parser("redrive", help="move every dead letter back to its queue")
    redrive_cmd.add_argument(
        "role", type=QueueRole, choices=list(QueueRole), metavar="|".join(roles)
    )
    redrive_cmd.add_argument(
        "--max-per-second", type=_positive, default=None, help="rate limit (default: none)"
    )
    redrive_cmd.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_REDRIVE_TIMEOUT_SECONDS,
        help="seconds to wait for the redrive to finish (default %(default)s)",
    )
    redrive_cmd.set_defaults(run=redrive)
    return parser


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw} is not a positive integer")
    return value


def main(argv: list[str] | None = None, *, ops: Operator | None = None) -> int:
    return run_command(_parser(), argv, ops)


if __name__ == "__main__":
    sys.exit(main())
