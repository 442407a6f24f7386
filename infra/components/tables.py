"""The DynamoDB tables, declared from one spec per table.

Every table gets the same guarantees (on-demand billing for an unpredictable spike, encryption,
PITR and deletion protection as the stack says); the specs differ only in keys, indexes, TTL and
streams. Key and index names come from ``flashsale.names``, which the adapters import too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from flashsale.names import (
    IDEMPOTENCY_PK,
    INVENTORY_PK,
    ORDERS_ACCEPTED_SEQ,
    ORDERS_BY_EVENT_INDEX,
    ORDERS_EVENT_ID,
    ORDERS_PK,
    OUTBOX_CREATED_AT,
    OUTBOX_PENDING_INDEX,
    OUTBOX_PENDING_SHARD,
    OUTBOX_PK,
    OUTBOX_SK,
    SAGAS_ACTIVE_INDEX,
    SAGAS_ACTIVE_SHARD,
    SAGAS_DEADLINE,
    SAGAS_PK,
    TTL_ATTRIBUTE,
    Table,
)

Key = tuple[str, str]  # attribute name, DynamoDB scalar type (S or N)


@dataclass(frozen=True)
class IndexSpec:
    """A global secondary index projecting every attribute (readers need the whole item)."""

    name: str
    hash_key: Key
    range_key: Key


@dataclass(frozen=True)
class TableSpec:
    hash_key: Key
    range_key: Key | None = None
    indexes: tuple[IndexSpec, ...] = field(default_factory=tuple)
    ttl: bool = False
    stream_view_type: str | None = None

    def key_attributes(self) -> dict[str, str]:
        """Every key attribute (table and indexes) with its scalar type."""
        keys = [self.hash_key, *([self.range_key] if self.range_key else [])]
        for index in self.indexes:
            keys += [index.hash_key, index.range_key]
        return dict(keys)

    def create_table_parameters(self) -> dict[str, Any]:
        """The keys and indexes as boto3 ``create_table`` takes them: tests build their moto
        tables from this declaration rather than restating it."""

        def schema(hash_key: Key, range_key: Key | None) -> list[dict[str, str]]:
            return [{"AttributeName": hash_key[0], "KeyType": "HASH"}] + (
                [{"AttributeName": range_key[0], "KeyType": "RANGE"}] if range_key else []
            )

        parameters: dict[str, Any] = {
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [
                {"AttributeName": n, "AttributeType": t} for n, t in self.key_attributes().items()
            ],
            "KeySchema": schema(self.hash_key, self.range_key),
        }
        if self.indexes:
            parameters["GlobalSecondaryIndexes"] = [
                {
                    "IndexName": index.name,
                    "KeySchema": schema(index.hash_key, index.range_key),
                    "Projection": {"ProjectionType": "ALL"},
                }
                for index in self.indexes
            ]
        return parameters


TABLE_SPECS: dict[Table, TableSpec] = {
    Table.INVENTORY: TableSpec(hash_key=(INVENTORY_PK, "S")),
    Table.ORDERS: TableSpec(
        hash_key=(ORDERS_PK, "S"),
        indexes=(
            IndexSpec(ORDERS_BY_EVENT_INDEX, (ORDERS_EVENT_ID, "S"), (ORDERS_ACCEPTED_SEQ, "N")),
        ),
    ),
    Table.IDEMPOTENCY: TableSpec(hash_key=(IDEMPOTENCY_PK, "S"), ttl=True),
    Table.OUTBOX: TableSpec(
        hash_key=(OUTBOX_PK, "S"),
        range_key=(OUTBOX_SK, "N"),
        indexes=(
            IndexSpec(OUTBOX_PENDING_INDEX, (OUTBOX_PENDING_SHARD, "N"), (OUTBOX_CREATED_AT, "S")),
        ),
        ttl=True,
        stream_view_type="NEW_IMAGE",
    ),
    Table.SAGAS: TableSpec(
        hash_key=(SAGAS_PK, "S"),
        indexes=(IndexSpec(SAGAS_ACTIVE_INDEX, (SAGAS_ACTIVE_SHARD, "N"), (SAGAS_DEADLINE, "N")),),
    ),
}


@dataclass(frozen=True)
class DataTablesArgs:
    stack: str
    deletion_protection: bool
    point_in_time_recovery: bool


class DataTables(pulumi.ComponentResource):
    """Every table in ``flashsale.names.Table``, each built from its ``TABLE_SPECS`` entry."""

    tables: dict[Table, aws.dynamodb.Table]

    def __init__(
        self, name: str, args: DataTablesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("flashsale:data:DataTables", name, None, opts)
        self.tables = {table: self._table(table, TABLE_SPECS[table], args) for table in Table}
        self.register_outputs(
            {f"{table.value}_arn": resource.arn for table, resource in self.tables.items()}
        )

    def index_arns(self, table: Table) -> list[pulumi.Output[str]]:
        """The ARNs IAM needs to allow a Query on each of the table's indexes."""
        arn = self.tables[table].arn
        return [pulumi.Output.concat(arn, "/index/", i.name) for i in TABLE_SPECS[table].indexes]

    def _table(self, table: Table, spec: TableSpec, args: DataTablesArgs) -> aws.dynamodb.Table:
        return aws.dynamodb.Table(
            table.value,
            name=table.physical_name(args.stack),
            billing_mode="PAY_PER_REQUEST",
            hash_key=spec.hash_key[0],
            range_key=spec.range_key[0] if spec.range_key else None,
            attributes=[
                aws.dynamodb.TableAttributeArgs(name=n, type=t)
                for n, t in spec.key_attributes().items()
            ],
            global_secondary_indexes=[
                aws.dynamodb.TableGlobalSecondaryIndexArgs(
                    name=index.name,
                    projection_type="ALL",
                    key_schemas=[
                        aws.dynamodb.TableGlobalSecondaryIndexKeySchemaArgs(
                            attribute_name=index.hash_key[0], key_type="HASH"
                        ),
                        aws.dynamodb.TableGlobalSecondaryIndexKeySchemaArgs(
                            attribute_name=index.range_key[0], key_type="RANGE"
                        ),
                    ],
                )
                for index in spec.indexes
            ]
            or None,
            server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(enabled=True),
            point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(
                enabled=args.point_in_time_recovery
            ),
            deletion_protection_enabled=args.deletion_protection,
            ttl=aws.dynamodb.TableTtlArgs(attribute_name=TTL_ATTRIBUTE, enabled=True)
            if spec.ttl
            else None,
            stream_enabled=spec.stream_view_type is not None,
            stream_view_type=spec.stream_view_type,
            opts=pulumi.ResourceOptions(parent=self),
        )
