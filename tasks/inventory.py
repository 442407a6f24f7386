"""Events on sale and their ledger: put an event on sale, read back what was decided."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from flashsale.dynamo import from_item, to_item
from flashsale.names import INVENTORY_PK, ORDERS_BY_EVENT_INDEX
from tasks.exceptions import EventAlreadyExists


def create_event(dynamodb: Any, table: str, event_id: str, capacity: int) -> None:
    """Put an event on sale with ``capacity`` seats; refuses to reset an existing event."""
    if capacity < 0:
        raise ValueError(f"capacity must be >= 0, got {capacity}")
    try:
        dynamodb.put_item(
            TableName=table,
            Item=to_item({INVENTORY_PK: event_id, "capacity": capacity, "sold": 0}),
            ConditionExpression=f"attribute_not_exists({INVENTORY_PK})",
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            raise EventAlreadyExists(event_id) from exc
        raise


def get_inventory(dynamodb: Any, table: str, event_id: str) -> dict[str, Any] | None:
    response = dynamodb.get_item(
        TableName=table, Key={INVENTORY_PK: {"S": event_id}}, ConsistentRead=True
    )
    return from_item(response["Item"]) if "Item" in response else None


def event_orders(dynamodb: Any, table: str, event_id: str) -> list[dict[str, Any]]:
    """Every decided order of an event, in acceptance order (the ``by_event`` index)."""
    orders: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "IndexName": ORDERS_BY_EVENT_INDEX,
        "KeyConditionExpression": "event_id = :e",
        "ExpressionAttributeValues": {":e": {"S": event_id}},
    }
    while True:
        page = dynamodb.query(**kwargs)
        orders.extend(from_item(item) for item in page["Items"])
        if "LastEvaluatedKey" not in page:
            return orders
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
