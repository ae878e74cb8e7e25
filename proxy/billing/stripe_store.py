"""The ledger's tables for what Stripe tells the proxy: webhook events applied (each once),
the keys that paid checkouts earn, and the meter events Stripe reported as failed.

Each webhook's effect and the record of its event id are written in one transaction, so a
replayed event changes nothing and a crash never leaves an effect without its record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.storage import Cursor, Database


@dataclass(frozen=True)
class CheckoutKey:
    session_id: str
    customer: str
    key_id: str
    browser_hash: str | None  # SHA-256 of the cookie of the browser that started the checkout
    created_at: str
    shown_at: str | None
    revoked_at: str | None


class StripeStore:
    """Stripe's side of the ledger, in the same database as the rest (so a checkout's key goes
    into `api_keys` in the transaction that records the checkout)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def record_stripe_event(self, event_id: str, event_type: str, at: str) -> bool:
        """For events that change nothing else; False when the event was seen before."""
        with self.database.transaction() as cur:
            return claim_event(cur, event_id, event_type, at)

    def add_checkout_key(
        self,
        event: tuple[str, str],
        session_id: str,
        customer: str,
        key_id: str,
        browser_hash: str | None,
        at: str,
        subscription_id: str | None = None,
    ) -> bool:
        """Binds a new key id to a paid checkout session, once per event and once per session.
        `event` is the Stripe event's (id, type). A subscription the ledger knows as ended (a
        retried event processed after its deletion) binds a key that is revoked already."""
        with self.database.transaction() as cur:
            if not claim_event(cur, *event, at):
                return False
            ended = False
            if subscription_id is not None:
                # Locked, so a deletion applied at the same moment is either seen here or sees this key.
                lock = " FOR UPDATE" if self.database.dialect == "postgresql" else ""
                cur.execute(f"SELECT status FROM stripe_subscriptions WHERE id = ?{lock}", (subscription_id,))  # noqa: S608
                row = cur.fetchone()
                ended = row is not None and row[0] in (
                    "canceled",
                    "incomplete_expired",
                )  # subscriptions.ENDED
            cur.execute(
                "INSERT INTO checkout_keys "
                "(session_id, customer, key_id, browser_hash, created_at, subscription_id, revoked_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO NOTHING",
                (session_id, customer, key_id, browser_hash, at, subscription_id, at if ended else None),
            )
            return cur.rowcount == 1

    def checkout_key(self, session_id: str) -> CheckoutKey | None:
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT session_id, customer, key_id, browser_hash, created_at, shown_at, revoked_at "
                "FROM checkout_keys WHERE session_id = ?",
                (session_id,),
            )
            row = cur.fetchone()
        return CheckoutKey(*row) if row else None

    def claim_checkout_key(self, session_id: str, key_hash: str, at: str) -> bool:
        """Makes the session's key live with `key_hash`: on its first display only, and only
        while its subscription is alive."""
        with self.database.transaction() as cur:
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

    def flag_meter_errors(
        self, event: tuple[str, str], errors: list[tuple[str, str, str]], at: str
    ) -> int | None:
        """Flags the outbox rows Stripe reported as (identifier, code, message), and makes each a
        dead letter: Stripe took the call but not the event, so it no longer counts as delivered.
        Returns how many matched an event of ours as sent (a resend's identifier names its
        resend), or None when the event was seen before."""
        with self.database.transaction() as cur:
            if not claim_event(cur, *event, at):
                return None
            flagged = 0
            for identifier, code, message in errors:
                prediction_id, resends = parse_identifier(identifier)
                cur.execute(
                    "UPDATE meter_outbox SET delivered_at = NULL, dead_at = ?, dead_reason = ? "
                    "WHERE prediction_id = ? AND resends = ? AND dead_at IS NULL",
                    (at, f"Stripe reported {code}: {message}", prediction_id, resends),
                )
                if cur.rowcount != 1:
                    continue
                flagged += 1
                cur.execute(
                    "INSERT INTO meter_error_flags (prediction_id, code, message, stripe_event, flagged_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (prediction_id) DO UPDATE SET code = excluded.code, "
                    "message = excluded.message, stripe_event = excluded.stripe_event, "
                    "flagged_at = excluded.flagged_at",
                    (prediction_id, code, message, event[0], at),
                )
            return flagged

    def meter_error_flags(self) -> list[tuple[str, str]]:
        """(prediction_id, code) of each outbox row Stripe reported an error for."""
        with self.database.transaction() as cur:
            cur.execute("SELECT prediction_id, code FROM meter_error_flags ORDER BY prediction_id")
            return [tuple(row) for row in cur.fetchall()]

    def stripe_event_seen(self, event_id: str) -> bool:
        with self.database.transaction() as cur:
            cur.execute("SELECT 1 FROM stripe_events WHERE id = ?", (event_id,))
            return cur.fetchone() is not None


def parse_identifier(identifier: str) -> tuple[str, int]:
    """(prediction id, resends) of a meter event identifier (store.MeterEvent.identifier)."""
    match = re.fullmatch(r"(.+)\.r([0-9]+)", identifier)
    return (match.group(1), int(match.group(2))) if match else (identifier, 0)


def claim_event(cur: Cursor, event_id: str, event_type: str, at: str) -> bool:
    """Records a Stripe event as applied, in the caller's transaction; False if it was before."""
    cur.execute(
        "INSERT INTO stripe_events (id, type, received_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (event_id, event_type, at),
    )
    return cur.rowcount == 1
