"""The ledger's tables for what Stripe tells the proxy: webhook events applied (each once),
the keys that paid checkouts earn, and the meter events Stripe reported as failed.

Each webhook's effect and the record of its event id are written in one transaction, so a
replayed event changes nothing and a crash never leaves an effect without its record.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass

STRIPE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS stripe_events (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        received_at TEXT NOT NULL
    )""",
    # The key id is fixed when Stripe confirms the payment; its secret is made at first display.
    """CREATE TABLE IF NOT EXISTS checkout_keys (
        session_id TEXT PRIMARY KEY,
        customer TEXT NOT NULL,
        key_id TEXT NOT NULL UNIQUE,
        browser_hash TEXT,
        created_at TEXT NOT NULL,
        shown_at TEXT,
        revoked_at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS checkout_keys_by_customer ON checkout_keys (customer)",
    "CREATE INDEX IF NOT EXISTS api_keys_by_customer ON api_keys (customer)",
    """CREATE TABLE IF NOT EXISTS meter_error_flags (
        prediction_id TEXT PRIMARY KEY,
        code TEXT NOT NULL,
        message TEXT NOT NULL,
        stripe_event TEXT NOT NULL,
        flagged_at TEXT NOT NULL
    )""",
)


@dataclass(frozen=True)
class CheckoutKey:
    session_id: str
    customer: str
    key_id: str
    browser_hash: str | None  # SHA-256 of the cookie of the browser that started the checkout
    created_at: str
    shown_at: str | None
    revoked_at: str | None


class StripeLedger:
    """Mixed into `Ledger`, whose connection and lock it uses."""

    def _transaction(self) -> AbstractContextManager[sqlite3.Cursor]:
        raise NotImplementedError

    def record_stripe_event(self, event_id: str, event_type: str, at: str) -> bool:
        """For events that change nothing else; False when the event was seen before."""
        with self._transaction() as cur:
            return _claim_event(cur, event_id, event_type, at)

    def add_checkout_key(
        self,
        event: tuple[str, str],
        session_id: str,
        customer: str,
        key_id: str,
        browser_hash: str | None,
        at: str,
    ) -> bool:
        """Binds a new key id to a paid checkout session, once per event and once per session.
        `event` is the Stripe event's (id, type)."""
        with self._transaction() as cur:
            if not _claim_event(cur, *event, at):
                return False
            cur.execute(
                "INSERT INTO checkout_keys (session_id, customer, key_id, browser_hash, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id) DO NOTHING",
                (session_id, customer, key_id, browser_hash, at),
            )
            return cur.rowcount == 1

    def checkout_key(self, session_id: str) -> CheckoutKey | None:
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT session_id, customer, key_id, browser_hash, created_at, shown_at, revoked_at "
                "FROM checkout_keys WHERE session_id = ?",
                (session_id,),
            ).fetchone()
        return CheckoutKey(*row) if row else None

    def claim_checkout_key(self, session_id: str, key_hash: str, at: str) -> bool:
        """Makes the session's key live with `key_hash`: on its first display only, and only
        while its subscription is alive."""
        with self._transaction() as cur:
            cur.execute(
                "UPDATE checkout_keys SET shown_at = ? "
                "WHERE session_id = ? AND shown_at IS NULL AND revoked_at IS NULL",
                (at, session_id),
            )
            if cur.rowcount != 1:
                return False
            cur.execute(
                "INSERT INTO api_keys (id, key_hash, customer, created_at) "
                "SELECT key_id, ?, customer, ? FROM checkout_keys WHERE session_id = ?",
                (key_hash, at, session_id),
            )
            return True

    def revoke_customer_keys(self, event: tuple[str, str], customer: str, at: str) -> int | None:
        """Revokes every key of `customer`, shown or not yet; None when the event was seen."""
        with self._transaction() as cur:
            if not _claim_event(cur, *event, at):
                return None
            cur.execute(
                "UPDATE checkout_keys SET revoked_at = ? WHERE customer = ? AND revoked_at IS NULL",
                (at, customer),
            )
            cur.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE customer = ? AND revoked_at IS NULL", (at, customer)
            )
            return cur.rowcount

    def flag_meter_errors(
        self, event: tuple[str, str], errors: list[tuple[str, str, str]], at: str
    ) -> int | None:
        """Flags the outbox rows Stripe reported as (identifier, code, message); returns how many
        matched a row of ours, or None when the event was seen before."""
        with self._transaction() as cur:
            if not _claim_event(cur, *event, at):
                return None
            flagged = 0
            for identifier, code, message in errors:
                cur.execute(
                    "INSERT INTO meter_error_flags (prediction_id, code, message, stripe_event, flagged_at) "
                    "SELECT prediction_id, ?, ?, ?, ? FROM meter_outbox WHERE prediction_id = ? "
                    "ON CONFLICT (prediction_id) DO NOTHING",
                    (code, message, event[0], at, identifier),
                )
                flagged += cur.rowcount
            return flagged

    def meter_error_flags(self) -> list[tuple[str, str]]:
        """(prediction_id, code) of each outbox row Stripe reported an error for."""
        with self._transaction() as cur:
            return cur.execute(
                "SELECT prediction_id, code FROM meter_error_flags ORDER BY prediction_id"
            ).fetchall()

    def stripe_event_seen(self, event_id: str) -> bool:
        with self._transaction() as cur:
            return cur.execute("SELECT 1 FROM stripe_events WHERE id = ?", (event_id,)).fetchone() is not None


def _claim_event(cur: sqlite3.Cursor, event_id: str, event_type: str, at: str) -> bool:
    cur.execute(
        "INSERT INTO stripe_events (id, type, received_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (event_id, event_type, at),
    )
    return cur.rowcount == 1
