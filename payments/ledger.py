"""The payment provider's own books: a SQLite file owned by the provider process alone.

The ledger is the provider's memory, not flashsale's: it survives the provider crashing right
after a charge and a restart, so a retry with the same idempotency key is answered from it and
a duplicate charge (a second key for one order) would be counted, never hidden. A charge is
keyed by its idempotency key (``PRIMARY KEY``): one key can never be charged twice. Every
decision is one ``BEGIN IMMEDIATE`` transaction, committed (WAL) before the provider answers.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    key TEXT PRIMARY KEY,
    charge_id TEXT NOT NULL UNIQUE,
    amount INTEGER NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('succeeded', 'declined')),
    decline_code TEXT,
    created_at REAL NOT NULL,
    refund_id TEXT UNIQUE,
    refunded_at REAL,
    CHECK (refund_id IS NULL OR status = 'succeeded')
);
CREATE TABLE IF NOT EXISTS voids (
    key TEXT PRIMARY KEY,
    voided_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

DECLINE_CODE = "card_declined"


class ChargeOutcome(StrEnum):
    """What a charge request did to the ledger."""

    CREATED = "created"
    REPLAYED = "replayed"
    CONFLICT = "conflict"  # same key, different amount or currency
    VOIDED = "voided"  # the key was voided by a refund first: refused, nothing recorded


class RefundOutcome(StrEnum):
    REFUNDED = "refunded"
    VOIDED = "voided"
    NOTHING_TO_REFUND = "nothing_to_refund"


@dataclass(frozen=True)
class ChargeRecord:
    key: str
    charge_id: str
    amount: int
    currency: str
    description: str
    status: str
    decline_code: str | None
    created_at: float
    refund_id: str | None
    refunded_at: float | None

    @property
    def refunded(self) -> bool:
        return self.refund_id is not None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.charge_id,
            "key": self.key,
            "amount": self.amount,
            "currency": self.currency,
            "description": self.description,
            "status": self.status,
            "decline_code": self.decline_code,
            "refunded": self.refunded,
            "refund_id": self.refund_id,
            "created_at": self.created_at,
            "refunded_at": self.refunded_at,
        }


@dataclass(frozen=True)
class RefundResult:
    outcome: RefundOutcome
    replayed: bool
    charge: ChargeRecord | None


class Ledger:
    """Charges, refunds and voids by idempotency key; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # In WAL mode a commit is in the WAL file before the provider answers, so it survives
        # the process dying (the fault this provider simulates); FULL would add an fsync per
        # commit (2.5 ms here, serialized) against power loss, which nothing here simulates.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def charge(
        self, *, key: str, amount: int, currency: str, description: str, declined: bool
    ) -> tuple[ChargeOutcome, ChargeRecord | None]:
        """Decide and record the first charge of ``key``; answer a repeat from the record."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM voids WHERE key = ?", (key,)).fetchone():
                _bump(db, "refused_voided")
                return ChargeOutcome.VOIDED, None
            existing = _charge(db, key)
            if existing is not None:
                if (existing.amount, existing.currency) != (amount, currency):
                    _bump(db, "idempotency_conflicts")
                    return ChargeOutcome.CONFLICT, existing
                _bump(db, "replays")
                return ChargeOutcome.REPLAYED, existing
            db.execute(
                "INSERT INTO charges (key, charge_id, amount, currency, description, status,"
                " decline_code, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    f"ch_{secrets.token_hex(12)}",
                    amount,
                    currency,
                    description,
                    "declined" if declined else "succeeded",
                    DECLINE_CODE if declined else None,
                    time.time(),
                ),
            )
            created = _charge(db, key)
            assert created is not None
            return ChargeOutcome.CREATED, created

    def refund(self, key: str) -> RefundResult:
        """Refund the succeeded charge of ``key`` once; void a key that has no charge yet."""
        with self._transaction() as db:
            charge = _charge(db, key)
            if charge is None:
                voided = db.execute(
                    "INSERT INTO voids (key, voided_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                    (key, time.time()),
                )
                replayed = voided.rowcount == 0
                if replayed:
                    _bump(db, "refund_replays")
                return RefundResult(RefundOutcome.VOIDED, replayed, None)
            if charge.status == "declined":
                return RefundResult(RefundOutcome.NOTHING_TO_REFUND, False, charge)
            if charge.refunded:
                _bump(db, "refund_replays")
                return RefundResult(RefundOutcome.REFUNDED, True, charge)
            db.execute(
                "UPDATE charges SET refund_id = ?, refunded_at = ? WHERE key = ?",
                (f"re_{secrets.token_hex(12)}", time.time(), key),
            )
            refunded = _charge(db, key)
            return RefundResult(RefundOutcome.REFUNDED, False, refunded)

    def summary(self) -> dict[str, int]:
        """The counts tests assert on (``charges`` counts succeeded charges, refunded or not)."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT"
                " COALESCE(SUM(status = 'succeeded'), 0) AS charges,"
                " COALESCE(SUM(status = 'declined'), 0) AS declines,"
                " COALESCE(SUM(refund_id IS NOT NULL), 0) AS refunds,"
                " COALESCE(SUM(CASE WHEN status = 'succeeded' AND refund_id IS NULL"
                " THEN amount ELSE 0 END), 0) AS captured_cents"
                " FROM charges"
            ).fetchone()
            (voids,) = db.execute("SELECT COUNT(*) FROM voids").fetchone()
            counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
        return {
            "charges": row["charges"],
            "declines": row["declines"],
            "refunds": row["refunds"],
            "voids": voids,
            "replays": counters.get("replays", 0),
            "refund_replays": counters.get("refund_replays", 0),
            "idempotency_conflicts": counters.get("idempotency_conflicts", 0),
            "refused_voided": counters.get("refused_voided", 0),
            "captured_cents": row["captured_cents"],
        }

    def charges(self) -> list[ChargeRecord]:
        with self._transaction() as db:
            rows = db.execute("SELECT * FROM charges ORDER BY created_at, rowid").fetchall()
        return [ChargeRecord(**dict(row)) for row in rows]

    def voided_keys(self) -> list[str]:
        with self._transaction() as db:
            rows = db.execute("SELECT key FROM voids ORDER BY voided_at, rowid").fetchall()
        return [row["key"] for row in rows]


def _charge(db: sqlite3.Connection, key: str) -> ChargeRecord | None:
    row = db.execute("SELECT * FROM charges WHERE key = ?", (key,)).fetchone()
    return None if row is None else ChargeRecord(**dict(row))


def _bump(db: sqlite3.Connection, name: str) -> None:
    db.execute(
        "INSERT INTO counters (name, value) VALUES (?, 1)"
        " ON CONFLICT (name) DO UPDATE SET value = value + 1",
        (name,),
    )
