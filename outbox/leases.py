"""Shard leases with fencing tokens, and the membership that splits shards between relays.

Each pending-index shard has one lease item in the outbox table (``lease#<shard>``, sequence 0,
no ``pending_shard``, so it never shows up in the pending index). A relay owns a shard while
its lease is unexpired; taking a lease over (free, released or expired) increments the lease's
``token``, and every write a relay makes for a shard's records carries a ``ConditionCheck`` on
(owner, token): a relay that was paused past its lease and lost it cannot mark anything.

Relays announce themselves with a heartbeat item under ``relays#``; every live relay computes
the same assignment (shard ``s`` goes to the ``s % n``-th live relay by name), releases shards
no longer assigned to it and takes the ones that are. A dead relay's heartbeat and leases
expire after ``duration`` seconds, so its shards are taken over within about ``2 * duration``
(measured 4.2 s with 3 s leases); a relay restarted under the same owner takes them back at
once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import ClientError

from flashsale.dynamo import from_item
from flashsale.names import OUTBOX_PK, OUTBOX_SK, TTL_ATTRIBUTE
from outbox.exceptions import StoreError

log = structlog.get_logger(__name__)

LEASE_PREFIX = "lease#"
MEMBERS_KEY = "relays#"
OWNER = "owner"
TOKEN = "token"
LEASE_UNTIL = "lease_until"  # epoch seconds; not the TTL attribute: a lease must never vanish
_NAMES = {"#owner": OWNER, "#token": TOKEN, "#until": LEASE_UNTIL, "#pk": OUTBOX_PK}


def lease_key(shard: int) -> dict[str, Any]:
    return {OUTBOX_PK: {"S": f"{LEASE_PREFIX}{shard}"}, OUTBOX_SK: {"N": "0"}}


def member_number(owner: str) -> int:
    """The heartbeat item's sort key: the outbox table's range key is a number."""
    return int.from_bytes(hashlib.blake2b(owner.encode(), digest_size=7).digest(), "big")


def assign(shards: int, members: Iterable[str]) -> dict[str, list[int]]:
    """Shards per live relay: round-robin over relays sorted by name, the same everywhere."""
    ordered = sorted(set(members))
    out: dict[str, list[int]] = {m: [] for m in ordered}
    if ordered:
        for shard in range(shards):
            out[ordered[shard % len(ordered)]].append(shard)
    return out


@dataclass(frozen=True)
class Lease:
    shard: int
    token: int
    until: float


def _failed_condition(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class Leases:
    """The leases this relay holds; ``maintain`` once per round keeps them right."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        *,
        owner: str,
        shards: int,
        duration: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ddb = dynamodb
        self._table = table
        self.owner = owner
        self.shards = shards
        self.duration = duration
        self._clock = clock
        self.held: dict[int, Lease] = {}
        self._next_membership = 0.0

    # -- the round ------------------------------------------------------------------------

    def maintain(self) -> list[int]:
        """Heartbeat, rebalance (every ``duration / 3`` s), renew what is due; return owned."""
        now = self._clock()
        if now >= self._next_membership:
            self._heartbeat(now)
            mine = set(assign(self.shards, self.members(now)).get(self.owner, []))
            for shard in sorted(set(self.held) - mine):
                self.release(shard)
            for shard in sorted(mine - set(self.held)):
                self.acquire(shard)
            self._next_membership = now + self.duration / 3
        for shard, lease in sorted(self.held.items()):
            if lease.until - now < self.duration * 2 / 3:
                self.renew(shard)
        return sorted(self.held)

    def fence(self, shard: int) -> dict[str, Any]:
        """A ``ConditionCheck`` that fails unless this relay still holds ``shard``'s lease."""
        lease = self.held[shard]
        return {
            "ConditionCheck": {
                "TableName": self._table,
                "Key": lease_key(shard),
                "ConditionExpression": "#owner = :me AND #token = :token",
                "ExpressionAttributeNames": {"#owner": OWNER, "#token": TOKEN},
                "ExpressionAttributeValues": {
                    ":me": {"S": self.owner},
                    ":token": {"N": str(lease.token)},
                },
            }
        }

    def valid(self, shard: int) -> bool:
        """Held with a margin left, so a send started now is marked before it runs out."""
        lease = self.held.get(shard)
        return lease is not None and lease.until - self._clock() > self.duration / 3

    def lost(self, shard: int) -> None:
        """Forget a lease that a fenced write proved to be someone else's now."""
        if self.held.pop(shard, None) is not None:
            log.warning("relay.lease_lost", shard=shard, owner=self.owner)

    # -- lease items ----------------------------------------------------------------------

    def acquire(self, shard: int) -> Lease | None:
        """Take ``shard`` if its lease is free, released, expired or this owner's; bumps the
        token. Two live relays must never share an owner name (the default is unique)."""
        now = self._clock()
        try:
            response = self._ddb.update_item(
                TableName=self._table,
                Key=lease_key(shard),
                UpdateExpression=(
                    "SET #owner = :me, #until = :until,"
                    " #token = if_not_exists(#token, :zero) + :one"
                ),
                # Its own lease too: a relay restarted under the same owner (a stable name,
                # as a StatefulSet pod has) resumes at once instead of waiting out the dead
                # process's lease. The token still grows, so that process is fenced off.
                ConditionExpression="attribute_not_exists(#pk) OR #until < :now OR #owner = :me",
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={
                    ":me": {"S": self.owner},
                    ":until": {"N": f"{now + self.duration:.3f}"},
                    ":now": {"N": f"{now:.3f}"},
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _failed_condition(exc):
                return None
            raise StoreError(f"acquiring lease {shard}: {exc}") from exc
        item = from_item(response["Attributes"])
        lease = Lease(shard, int(item[TOKEN]), float(item[LEASE_UNTIL]))
        self.held[shard] = lease
        log.info("relay.lease_acquired", shard=shard, token=lease.token, owner=self.owner)
        return lease

    def renew(self, shard: int) -> bool:
        lease = self.held[shard]
        until = self._clock() + self.duration
        if not self._update_own(shard, lease, until):
            self.lost(shard)
            return False
        self.held[shard] = Lease(shard, lease.token, until)
        return True

    def release(self, shard: int) -> None:
        """Let another relay take ``shard`` at once (keeps the token, so it only grows)."""
        lease = self.held.pop(shard, None)
        if lease is not None and self._update_own(shard, lease, 0.0):
            log.info("relay.lease_released", shard=shard, token=lease.token, owner=self.owner)

    def release_all(self) -> None:
        for shard in sorted(self.held):
            self.release(shard)
        try:
            self._ddb.delete_item(
                TableName=self._table,
                Key={
                    OUTBOX_PK: {"S": MEMBERS_KEY},
                    OUTBOX_SK: {"N": str(member_number(self.owner))},
                },
            )
        except ClientError as exc:
            log.warning("relay.leave_failed", owner=self.owner, error=str(exc))

    def _update_own(self, shard: int, lease: Lease, until: float) -> bool:
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=lease_key(shard),
                UpdateExpression="SET #until = :until",
                ConditionExpression="#owner = :me AND #token = :token",
                ExpressionAttributeNames={"#owner": OWNER, "#token": TOKEN, "#until": LEASE_UNTIL},
                ExpressionAttributeValues={
                    ":me": {"S": self.owner},
                    ":token": {"N": str(lease.token)},
                    ":until": {"N": f"{until:.3f}"},
                },
            )
        except ClientError as exc:
            if _failed_condition(exc):
                return False
            raise StoreError(f"renewing lease {shard}: {exc}") from exc
        return True

    # -- membership -----------------------------------------------------------------------

    def _heartbeat(self, now: float) -> None:
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item={
                    OUTBOX_PK: {"S": MEMBERS_KEY},
                    OUTBOX_SK: {"N": str(member_number(self.owner))},
                    OWNER: {"S": self.owner},
                    LEASE_UNTIL: {"N": f"{now + self.duration:.3f}"},
                    TTL_ATTRIBUTE: {"N": str(int(now + 3600))},
                },
            )
        except ClientError as exc:
            raise StoreError(f"heartbeat: {exc}") from exc

    def members(self, now: float | None = None) -> list[str]:
        """Relays whose heartbeat has not expired (this one included once it has beaten)."""
        now = self._clock() if now is None else now
        found: list[str] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#pk = :members",
            "ExpressionAttributeNames": {"#pk": OUTBOX_PK},
            "ExpressionAttributeValues": {":members": {"S": MEMBERS_KEY}},
            "ConsistentRead": True,
        }
        try:
            while True:
                response = self._ddb.query(**kwargs)
                for item in map(from_item, response.get("Items", [])):
                    if float(item[LEASE_UNTIL]) > now:
                        found.append(str(item[OWNER]))
                if "LastEvaluatedKey" not in response:
                    return found
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        except ClientError as exc:
            raise StoreError(f"reading relay membership: {exc}") from exc
