"""The ledger: one SQLite file (WAL) holding who created which prediction, what was billed,
the Stripe meter-event outbox and the API keys. All the proxy's SQL lives here.

The SQL is plain enough for PostgreSQL too (TEXT timestamps in ISO 8601 UTC, which sort as they
read; `INSERT ... ON CONFLICT DO NOTHING`); only the `?` placeholders would become `%s`.
Money is TEXT holding an exact decimal: summed in Python with `Decimal`, never by SQL floats.
Methods are blocking; the app calls them from a worker thread.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from proxy._ledger_stripe import STRIPE_SCHEMA, StripeLedger

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS predictions (
        id TEXT PRIMARY KEY,
        caller TEXT NOT NULL,
        model TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS predictions_by_caller ON predictions (caller, created_at)",
    """CREATE TABLE IF NOT EXISTS billed_usage (
        prediction_id TEXT PRIMARY KEY,
        caller TEXT NOT NULL,
        stripe_customer TEXT,
        model TEXT NOT NULL,
        version TEXT,
        predict_time_ms INTEGER NOT NULL,
        price_per_second TEXT NOT NULL,
        amount TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS billed_usage_by_caller ON billed_usage (caller)",
    """CREATE TABLE IF NOT EXISTS meter_outbox (
        prediction_id TEXT PRIMARY KEY,
        customer TEXT NOT NULL,
        event_name TEXT NOT NULL,
        value_ms INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        delivered_at TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS meter_dead_letter (
        prediction_id TEXT PRIMARY KEY,
        customer TEXT NOT NULL,
        event_name TEXT NOT NULL,
        value_ms INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        reason TEXT NOT NULL,
        dead_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        customer TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    )""",
    # Files customers uploaded (POST /v1/files): only their uploader may read or delete them.
    """CREATE TABLE IF NOT EXISTS uploads (
        id TEXT PRIMARY KEY,
        caller TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    *STRIPE_SCHEMA,
)

_USAGE_COLUMNS = (
    "prediction_id, caller, stripe_customer, model, version, predict_time_ms, "
    "price_per_second, amount, created_at"
)


@dataclass(frozen=True)
class Usage:
    """One billed prediction, as stored."""

    prediction_id: str
    caller: str
    stripe_customer: str | None  # None: an anonymous demo, the owner's cost
    model: str
    version: str | None
    predict_time_ms: int
    price_per_second: str
    amount: str
    created_at: str


@dataclass(frozen=True)
class MeterEvent:
    prediction_id: str
    customer: str
    event_name: str
    value_ms: int
    created_at: str
    delivered_at: str | None


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    key_hash: str
    customer: str
    created_at: str
    revoked_at: str | None


class Ledger(StripeLedger):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=10)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._transaction() as cur:
            for statement in SCHEMA:
                cur.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock, self._conn:
            yield self._conn.cursor()

    def ping(self) -> bool:
        try:
            with self._transaction() as cur:
                return bool(cur.execute("SELECT 1").fetchone() == (1,))
        except sqlite3.Error:
            return False

    # --- predictions: who created what --------------------------------------------------------

    def record_prediction(self, prediction_id: str, caller: str, model: str, at: str) -> None:
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO predictions (id, caller, model, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (prediction_id, caller, model, at),
            )

    def creator_of(self, prediction_id: str) -> str | None:
        with self._transaction() as cur:
            row = cur.execute("SELECT caller FROM predictions WHERE id = ?", (prediction_id,)).fetchone()
        return row[0] if row else None

    def record_upload(self, file_id: str, caller: str, at: str) -> None:
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO uploads (id, caller, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (file_id, caller, at),
            )

    def uploader_of(self, file_id: str) -> str | None:
        with self._transaction() as cur:
            row = cur.execute("SELECT caller FROM uploads WHERE id = ?", (file_id,)).fetchone()
        return row[0] if row else None

    def count_predictions_since(self, caller: str, since: str) -> int:
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT COUNT(*) FROM predictions WHERE caller = ? AND created_at >= ?",
                (caller, since),
            ).fetchone()
        return int(row[0])

    # --- billing ------------------------------------------------------------------------------

    def record_usage(self, usage: Usage, event_name: str | None) -> tuple[Usage, bool]:
        """Bills a prediction at most once. Returns the stored row and whether this call wrote
        it; the meter event for a customer is written in the same transaction."""
        with self._transaction() as cur:
            cur.execute(
                f"INSERT INTO billed_usage ({_USAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (prediction_id) DO NOTHING",
                (
                    usage.prediction_id,
                    usage.caller,
                    usage.stripe_customer,
                    usage.model,
                    usage.version,
                    usage.predict_time_ms,
                    usage.price_per_second,
                    usage.amount,
                    usage.created_at,
                ),
            )
            inserted = cur.rowcount == 1
            if inserted and usage.stripe_customer is not None and event_name is not None:
                cur.execute(
                    "INSERT INTO meter_outbox (prediction_id, customer, event_name, value_ms, "
                    "created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (prediction_id) DO NOTHING",
                    (
                        usage.prediction_id,
                        usage.stripe_customer,
                        event_name,
                        usage.predict_time_ms,
                        usage.created_at,
                    ),
                )
            row = cur.execute(
                f"SELECT {_USAGE_COLUMNS} FROM billed_usage WHERE prediction_id = ?",
                (usage.prediction_id,),
            ).fetchone()
        return Usage(*row), inserted

    def usage_of(self, caller: str) -> list[Usage]:
        with self._transaction() as cur:
            rows = cur.execute(
                f"SELECT {_USAGE_COLUMNS} FROM billed_usage WHERE caller = ? "
                "ORDER BY created_at, prediction_id",
                (caller,),
            ).fetchall()
        return [Usage(*row) for row in rows]

    def usage_for(self, prediction_id: str) -> Usage | None:
        with self._transaction() as cur:
            row = cur.execute(
                f"SELECT {_USAGE_COLUMNS} FROM billed_usage WHERE prediction_id = ?",
                (prediction_id,),
            ).fetchone()
        return Usage(*row) if row else None

    # --- the outbox (delivered to Stripe by a background worker) -------------------------------

    def undelivered_meter_events(
        self, limit: int = 100, after: tuple[str, str] | None = None
    ) -> list[MeterEvent]:
        """Oldest first; `after` = (created_at, prediction_id) of the last row seen, to page on."""
        created_at, prediction_id = after or ("", "")
        with self._transaction() as cur:
            rows = cur.execute(
                "SELECT prediction_id, customer, event_name, value_ms, created_at, delivered_at "
                "FROM meter_outbox WHERE delivered_at IS NULL "
                "AND (created_at > ? OR (created_at = ? AND prediction_id > ?)) "
                "ORDER BY created_at, prediction_id LIMIT ?",
                (created_at, created_at, prediction_id, limit),
            ).fetchall()
        return [MeterEvent(*row) for row in rows]

    def dead_letter_meter_event(self, prediction_id: str, reason: str, at: str) -> None:
        """Moves an undeliverable event out of the outbox, keeping it for an operator."""
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO meter_dead_letter (prediction_id, customer, event_name, value_ms, "
                "created_at, reason, dead_at) SELECT prediction_id, customer, event_name, value_ms, "
                "created_at, ?, ? FROM meter_outbox WHERE prediction_id = ? AND delivered_at IS NULL "
                "ON CONFLICT (prediction_id) DO NOTHING",
                (reason, at, prediction_id),
            )
            cur.execute(
                "DELETE FROM meter_outbox WHERE prediction_id = ? AND delivered_at IS NULL", (prediction_id,)
            )

    def dead_meter_events(self) -> list[tuple[str, str]]:
        """(prediction_id, reason) of each dead-lettered event."""
        with self._transaction() as cur:
            return cur.execute(
                "SELECT prediction_id, reason FROM meter_dead_letter ORDER BY created_at, prediction_id"
            ).fetchall()

    def delivered_meter_totals(self, since: str, until: str) -> dict[tuple[str, str], int]:
        """Delivered milliseconds per (customer, event_name), by usage time in [since, until)."""
        with self._transaction() as cur:
            rows = cur.execute(
                "SELECT customer, event_name, SUM(value_ms) FROM meter_outbox "
                "WHERE delivered_at IS NOT NULL AND created_at >= ? AND created_at < ? "
                "GROUP BY customer, event_name",
                (since, until),
            ).fetchall()
        return {(customer, name): int(total) for customer, name, total in rows}

    def mark_meter_event_delivered(self, prediction_id: str, at: str) -> None:
        with self._transaction() as cur:
            cur.execute(
                "UPDATE meter_outbox SET delivered_at = ? WHERE prediction_id = ? AND delivered_at IS NULL",
                (at, prediction_id),
            )

    # --- API keys -----------------------------------------------------------------------------

    def add_api_key(self, key_id: str, key_hash: str, customer: str, at: str) -> None:
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO api_keys (id, key_hash, customer, created_at) VALUES (?, ?, ?, ?)",
                (key_id, key_hash, customer, at),
            )

    def api_key(self, key_id: str) -> ApiKeyRecord | None:
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT id, key_hash, customer, created_at, revoked_at FROM api_keys WHERE id = ?",
                (key_id,),
            ).fetchone()
        return ApiKeyRecord(*row) if row else None

    def api_keys(self) -> list[ApiKeyRecord]:
        with self._transaction() as cur:
            rows = cur.execute(
                "SELECT id, key_hash, customer, created_at, revoked_at FROM api_keys ORDER BY created_at, id"
            ).fetchall()
        return [ApiKeyRecord(*row) for row in rows]

    def revoke_api_key(self, key_id: str, at: str) -> bool:
        with self._transaction() as cur:
            cur.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (at, key_id),
            )
            return cur.rowcount == 1
