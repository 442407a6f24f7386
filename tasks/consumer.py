"""A worker consumer that never deletes a message it cannot decode.

Celery's default acknowledges (deletes) an undecodable message so that it does not loop; on
SQS the redrive policy already ends the loop, so the message is left in the queue and
reaches the DLQ after ``maxReceiveCount`` receives, where an operator can inspect it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

logger = logging.getLogger(__name__)


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        logger.error(
            "consumer.undecodable_message",
            extra={"error": repr(exc), "content_type": message.content_type},
        )
        message.reject(requeue=False)
