"""Errors of the HTTP intake, under one root; each maps to one kind of HTTP answer."""

from __future__ import annotations


class IntakeError(Exception):
    """Root of the errors raised by the intake package."""


class Overloaded(IntakeError):
    """A bound was reached (backlog, buffer, requests in flight, enqueue wait): answer 503 with
    ``Retry-After`` now rather than time out later."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class EventNotFound(IntakeError):
    """No event with this id is on sale (as of the intake's cached view)."""


class BodyTooLarge(IntakeError):
    """The request body is larger than any purchase request can be."""


class StatusUnavailable(IntakeError):
    """The order's status could not be read (DynamoDB failing); the client may retry."""
