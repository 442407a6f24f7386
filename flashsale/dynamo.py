"""DynamoDB helpers for the low-level client: attribute-value conversion, and a
``TransactItems`` entry written on its own.

The low-level client is used (not the resource API) because ``TransactWriteItems`` and
``BatchGetItem`` are the calls that matter here, and they take typed attribute values.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """Plain values to a DynamoDB item (ints stay ints)."""
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB item to plain values; whole numbers come back as ``int``."""
    out: dict[str, Any] = {}
    for key, value in item.items():
        plain = _deserializer.deserialize(value)
        if isinstance(plain, Decimal) and plain == plain.to_integral_value():
            plain = int(plain)
        out[key] = plain
    return out


def cancellation_codes(error: Any) -> list[str]:
    """The per-item reason codes of a cancelled transaction (``None`` for items that passed)."""
    reasons = error.response.get("CancellationReasons", [])
    return [str(reason.get("Code", "None")) for reason in reasons]


def is_condition_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is DynamoDB refusing a single write because its condition failed."""
    return (
        isinstance(exc, ClientError)
        and exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
    )


_SINGLE_WRITES = {"Put": "put_item", "Update": "update_item", "Delete": "delete_item"}


def write_alone(dynamodb: Any, entry: Mapping[str, Any]) -> bool:
    """Write one ``TransactItems`` entry (``Put``, ``Update`` or ``Delete``) as a call of its
    own, for when the transaction meant to carry it did not commit. False if its condition
    failed; other errors (``ClientError``, ``BotoCoreError``) propagate."""
    ((action, request),) = entry.items()
    call = _SINGLE_WRITES.get(action)
    if call is None:
        raise ValueError(f"a {action} entry cannot be written on its own")
    try:
        getattr(dynamodb, call)(**request)
    except ClientError as exc:
        if is_condition_failure(exc):
            return False
        raise
    return True
