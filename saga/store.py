"""Saga state in DynamoDB: read it, write it behind a version check, find sagas that are due."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flashsale.names import SAGAS_ACTIVE_INDEX, SAGAS_ACTIVE_SHARD, SAGAS_DEADLINE, SAGAS_PK
from saga.state import QUARANTINE_DEADLINE, SagaState


class SagaStore:
    """The sagas table, through an injected low-level DynamoDB client."""

    def __init__(self, dynamodb: Any, *, table: str, shards: int) -> None:
        self.dynamodb = dynamodb
        self.table = table
        self.shards = shards

    def get(self, saga_id: str) -> SagaState | None:
        response = self.dynamodb.get_item(
            TableName=self.table, Key={SAGAS_PK: {"S": saga_id}}, ConsistentRead=True
        )
        return SagaState.from_item(response["Item"]) if "Item" in response else None

    def get_many(self, saga_ids: Iterable[str]) -> dict[str, SagaState]:
        """Many sagas in few calls (BatchGetItem, 100 keys each)."""
        ids = list(dict.fromkeys(saga_ids))
        found: dict[str, SagaState] = {}
        for start in range(0, len(ids), 100):
            keys: dict[str, Any] = {
                self.table: {
                    "Keys": [{SAGAS_PK: {"S": i}} for i in ids[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            while keys:
                response = self.dynamodb.batch_get_item(RequestItems=keys)
                for item in response.get("Responses", {}).get(self.table, []):
                    state = SagaState.from_item(item)
                    found[state.saga_id] = state
                keys = response.get("UnprocessedKeys") or {}
        return found

    def put_entry(self, state: SagaState, *, expected_version: int | None) -> dict[str, Any]:
        """A ``TransactItems`` Put of ``state``: only if the saga is new (``expected_version``
        None) or still at the version the caller read."""
        if expected_version is None:
            condition: dict[str, Any] = {
                "ConditionExpression": "attribute_not_exists(#id)",
                "ExpressionAttributeNames": {"#id": SAGAS_PK},
            }
        else:
            condition = {
                "ConditionExpression": "#version = :version",
                "ExpressionAttributeNames": {"#version": "version"},
                "ExpressionAttributeValues": {":version": {"N": str(expected_version)}},
            }
        put = {"TableName": self.table, "Item": state.to_item(self.shards), **condition}
        return {"Put": put}

    def due(self, shard: int, now: float, limit: int = 100) -> list[str]:
        """Ids of sagas on ``shard`` whose deadline has passed, oldest first (sparse index)."""
        response = self.dynamodb.query(
            TableName=self.table,
            IndexName=SAGAS_ACTIVE_INDEX,
            KeyConditionExpression="#shard = :shard AND #deadline <= :now",
            ExpressionAttributeNames={"#shard": SAGAS_ACTIVE_SHARD, "#deadline": SAGAS_DEADLINE},
            ExpressionAttributeValues={":shard": {"N": str(shard)}, ":now": {"N": f"{now:.3f}"}},
            Limit=limit,
        )
        return [item[SAGAS_PK]["S"] for item in response.get("Items", [])]

    def active(self, shard: int) -> list[str]:
        """Ids of every saga on ``shard`` that is not final (running, compensating, quarantined)."""
        return self._ids(shard, "#shard = :shard", {})

    def quarantined(self, shard: int) -> list[str]:
        """Ids of the quarantined sagas on ``shard``."""
        return self._ids(
            shard,
            "#shard = :shard AND #deadline >= :q",
            {":q": {"N": str(QUARANTINE_DEADLINE)}},
        )

    def _ids(self, shard: int, condition: str, values: dict[str, Any]) -> list[str]:
        names = {"#shard": SAGAS_ACTIVE_SHARD} | (
            {"#deadline": SAGAS_DEADLINE} if "#deadline" in condition else {}
        )
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": SAGAS_ACTIVE_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": {":shard": {"N": str(shard)}} | values,
        }
        ids: list[str] = []
        while True:
            response = self.dynamodb.query(**kwargs)
            ids.extend(item[SAGAS_PK]["S"] for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return ids
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
