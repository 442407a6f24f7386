"""What the local stack's SES and SNS actually sent, read back from LocalStack's own endpoints.

LocalStack records every ``SendEmail`` (``GET /_aws/ses``) and every SMS ``Publish``
(``GET /_aws/sns/sms-messages``) on its gateway, the endpoint the SDKs are pointed at
(``AWS_ENDPOINT_URL_SES`` / ``AWS_ENDPOINT_URL_SNS``). Two things to know:

- ``/_aws/ses?email=`` filters on the *sender* (``Source``), not the recipient, so recipients
  are filtered here, on ``Destination``.
- An SMS is recorded by a background thread after ``Publish`` returns: poll for it (with
  ``polling.wait_until``) rather than reading once.

Used by the integration tests and the demo's closing table, to count notifications exactly.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from typing import Any


def _endpoint(service: str) -> str:
    url = os.environ.get(f"AWS_ENDPOINT_URL_{service}") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        raise RuntimeError(f"AWS_ENDPOINT_URL_{service} is not set: no local stack to read from")
    return url.rstrip("/")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def sent_emails(to: str | None = None) -> list[dict[str, Any]]:
    """Every e-mail SES sent (LocalStack's records: ``Id``, ``Source``, ``Destination``,
    ``Subject``, ``Body.text_part``, ...), only those addressed to ``to`` if given."""
    messages: list[dict[str, Any]] = _get(f"{_endpoint('SES')}/_aws/ses")["messages"]
    if to is None:
        return messages
    wanted = to.lower()

    def recipients(message: dict[str, Any]) -> list[str]:
        destination = message.get("Destination") or {}
        return [
            address.lower()
            for field in ("ToAddresses", "CcAddresses", "BccAddresses")
            for address in destination.get(field) or []
        ]

    return [m for m in messages if wanted in recipients(m)]


def sent_sms(phone: str | None = None) -> list[dict[str, Any]]:
    """Every SMS SNS published to a phone number (``PhoneNumber``, ``Message``,
    ``MessageAttributes``, ``MessageId``), only those to ``phone`` if given."""
    query = {"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    if phone is not None:
        query["phoneNumber"] = phone
    url = f"{_endpoint('SNS')}/_aws/sns/sms-messages?{urllib.parse.urlencode(query)}"
    by_phone: dict[str, list[dict[str, Any]]] = _get(url)["sms_messages"]
    return [message for messages in by_phone.values() for message in messages]
