"""Every table: on demand, encrypted, PITR and deletion protection as configured, keys as named."""

from __future__ import annotations

from typing import Any

from mocked_stack import TABLE, ProgramRun

from flashsale import names
from flashsale.names import Table

# table -> (key schema, {index: (hash, range)}, TTL attribute, stream view type)
EXPECTED: dict[Table, tuple[dict[str, Any], dict[str, Any], str | None, str | None]] = {
    Table.INVENTORY: ({"hashKey": names.INVENTORY_PK}, {}, None, None),
    Table.ORDERS: (
        {"hashKey": names.ORDERS_PK},
        {names.ORDERS_BY_EVENT_INDEX: (names.ORDERS_EVENT_ID, names.ORDERS_ACCEPTED_SEQ)},
        None,
        None,
    ),
    Table.IDEMPOTENCY: ({"hashKey": names.IDEMPOTENCY_PK}, {}, names.TTL_ATTRIBUTE, None),
    Table.OUTBOX: (
        {"hashKey": names.OUTBOX_PK, "rangeKey": names.OUTBOX_SK},
        {names.OUTBOX_PENDING_INDEX: (names.OUTBOX_PENDING_SHARD, names.OUTBOX_CREATED_AT)},
        names.TTL_ATTRIBUTE,
        "NEW_IMAGE",
    ),
    Table.SAGAS: (
        {"hashKey": names.SAGAS_PK},
        {names.SAGAS_ACTIVE_INDEX: (names.SAGAS_ACTIVE_SHARD, names.SAGAS_DEADLINE)},
        None,
        None,
    ),
}


def test_every_table__on_demand_encrypted_and_protected_as_configured(run: ProgramRun) -> None:
    tables = run.of_type(TABLE)
    assert {t.state["name"] for t in tables} == {t.physical_name(run.stack) for t in Table}
    for table in tables:
        inputs = table.inputs
        assert inputs["billingMode"] == "PAY_PER_REQUEST", f"table {table.name}"
        assert inputs["serverSideEncryption"] == {"enabled": True}, f"table {table.name} no SSE"
        pitr = inputs["pointInTimeRecovery"]["enabled"]
        assert pitr is run.config.point_in_time_recovery, f"table {table.name}: PITR {pitr}"
        protected = inputs["deletionProtectionEnabled"]
        assert protected is run.config.deletion_protection, f"table {table.name}: {protected}"


def test_every_table__keys_indexes_ttl_and_stream_as_declared(run: ProgramRun) -> None:
    for table in Table:
        declared = run.named(TABLE, table.physical_name(run.stack))
        keys, indexes, ttl, stream = EXPECTED[table]
        inputs = declared.inputs
        assert {k: inputs[k] for k in ("hashKey", "rangeKey") if k in inputs} == keys, table
        found = {
            index["name"]: tuple(key["attributeName"] for key in index["keySchemas"])
            for index in inputs.get("globalSecondaryIndexes", [])
        }
        assert found == indexes, f"table {declared.name}: indexes {found}"
        assert all(i["projectionType"] == "ALL" for i in inputs.get("globalSecondaryIndexes", []))
        defined = {a["name"] for a in inputs["attributes"]}
        used = set(keys.values()) | {k for pair in indexes.values() for k in pair}
        assert defined == used, f"table {declared.name}: attributes {defined} != keys {used}"
        expected_ttl = {"attributeName": ttl, "enabled": True} if ttl else None
        assert inputs.get("ttl") == expected_ttl, f"table {declared.name}: TTL"
        assert inputs["streamEnabled"] is (stream is not None), f"table {declared.name}: stream"
        assert inputs.get("streamViewType") == stream, f"table {declared.name}: stream view"
