"""Sends outbox records to their queues as Celery task messages, ten per call.

Transient failures (throttling, 5xx, connection errors, entries SQS did not blame on us) are
retried within the round with jittered exponential backoff; what is left is returned as failed,
marked transient or not: the relay backs off from both but parks a record only for failures
that are not transient (an outage is waited out, and the lag alarm says so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from flashsale.names import QueueRole
from outbox.ordering import Pending


class _Transient(Exception):
    """Some entries failed for a reason worth retrying now."""


@dataclass
class SendResult:
    sent: list[Pending] = field(default_factory=list)
    failed: list[tuple[Pending, str, bool]] = field(default_factory=list)  # ..., transient
    calls: int = 0


def _transient(exc: ClientError) -> bool:
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return status >= 500 or "Throttl" in code or code == "RequestThrottled"


class Sender:
    """``SendMessageBatch`` to each role's queue URL, over an injected SQS client."""

    def __init__(
        self,
        sqs: Any,
        queue_urls: Mapping[QueueRole, str],
        *,
        attempts: int = 3,
        backoff: float = 0.05,
    ) -> None:
        self._sqs = sqs
        self._urls = dict(queue_urls)
        self._attempts = attempts
        self._backoff = backoff

    def send(self, destination: QueueRole, batch: Sequence[Pending]) -> SendResult:
        """Send ``batch`` (≤ 10 records, ≤ 256 KiB) to ``destination``; never raises for a
        failed send: every record ends up in ``sent`` or ``failed``."""
        result = SendResult()
        remaining = {str(i): p for i, p in enumerate(batch)}
        errors: dict[str, str] = {}
        transient: set[str] = set()

        def attempt() -> None:
            result.calls += 1
            entries = [p.record.batch_entry(entry_id) for entry_id, p in remaining.items()]
            try:
                response = self._sqs.send_message_batch(
                    QueueUrl=self._urls[destination], Entries=entries
                )
            except ClientError as exc:
                for entry_id in remaining:
                    errors[entry_id] = f"{exc.response.get('Error', {}).get('Code')}: {exc}"
                if _transient(exc):
                    transient.update(remaining)
                    raise _Transient from exc
                transient.difference_update(remaining)
                return
            except BotoCoreError as exc:
                for entry_id in remaining:
                    errors[entry_id] = f"{type(exc).__name__}: {exc}"
                transient.update(remaining)
                raise _Transient from exc
            for ok in response.get("Successful", []):
                result.sent.append(remaining.pop(ok["Id"]))
                errors.pop(ok["Id"], None)
            retry = False
            for failed in response.get("Failed", []):
                errors[failed["Id"]] = f"{failed.get('Code')}: {failed.get('Message', '')}"
                if failed.get("SenderFault", False):
                    transient.discard(failed["Id"])
                else:
                    transient.add(failed["Id"])
                    retry = True
            if retry:
                raise _Transient

        try:
            for round_ in Retrying(
                retry=retry_if_exception_type(_Transient),
                stop=stop_after_attempt(self._attempts),
                wait=wait_random_exponential(multiplier=self._backoff, max=2.0),
                reraise=True,
            ):
                with round_:
                    attempt()
        except _Transient:
            pass
        result.failed = [
            (p, errors.get(i, "not sent"), i in transient) for i, p in remaining.items()
        ]
        return result
