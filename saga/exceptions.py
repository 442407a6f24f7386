"""Errors of the saga orchestrator, under one root."""

from __future__ import annotations


class SagaError(Exception):
    """Root of every saga error."""


class InvalidDefinition(SagaError):
    """A saga definition breaks the rules of step kinds (checked when it is defined)."""


class SagaNotFound(SagaError):
    """A command names a saga that was never written."""


class ConcurrentTransition(SagaError):
    """Another process moved the saga on between our read and our write; re-read."""


class StepFailed(SagaError):
    """A business failure (a declined card, a refused ticket): never retried, compensated.

    With ``certain`` (the default) the action had no effect, so only the steps before it are
    compensated; pass ``certain=False`` when an earlier attempt may have had one (its own
    compensation then runs too). Anything else that goes wrong is retried, and a step that
    keeps failing counts as failed with a possible effect.
    """

    def __init__(self, reason: str, *, certain: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.certain = certain  # False: the action may have had an effect; compensate it too


class RetryAfter(SagaError):
    """Not now, and not before ``seconds``: something the step waits on is held elsewhere for a
    known time (another worker's lease, say). The saga re-sends its command delayed by at least
    that, instead of letting the queue redeliver it at once, which would spend the message's
    receives on a wait and dead-letter it."""

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(reason)
        self.seconds = seconds
        self.reason = reason
