"""The bill: one `billed_usage` row per billed prediction and, for a customer, one meter event in
the outbox, written in one transaction keyed by prediction id, so a prediction is billed once
however many times it is seen. Then the outbox, which any number of workers drain together.

How workers share the outbox: Stripe takes one call at a time per customer and meter, so the
unit of work is a lane, (customer, meter). A worker leases lanes (`claim_lanes`), renews its
leases while it works (`renew`), and gives a lane back when it is empty (`release`); a lane whose
lease ran out (its worker died) is free for the next worker. On PostgreSQL the claim skips lanes
another worker is claiming at that moment (FOR UPDATE SKIP LOCKED); on SQLite the claim holds the
database's one write lock. An event is marked delivered, or dead, in place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal

from proxy.billing.caps import add_spend
from proxy.storage import Database

_USAGE = (
    "prediction_id, caller, stripe_customer, model, version, predict_time_ms, price_per_second, "
    "amount, created_at, kind, key_id"
)
_EVENT = "prediction_id, customer, event_name, value_ms, created_at, first_attempt_at, resends"
PENDING = "delivered_at IS NULL AND dead_at IS NULL"

Lane = tuple[str, str]  # (customer, event_name)


@dataclass(frozen=True)
class Usage:
    """One billed prediction, as stored."""

    prediction_id: str
    caller: str
    stripe_customer: str | None  # None: an anonymous demo, the owner's cost
    model: str
    version: str | None
    predict_time_ms: int  # what is billed: the compute, or a cache hit's share of it
    price_per_second: str
    amount: str
    created_at: str
    kind: str = "compute"  # or "cache_hit"
    key_id: str | None = None  # the API key that created the prediction (its spend cap counts it)


@dataclass(frozen=True)
class MeterEvent:
    prediction_id: str
    customer: str
    event_name: str
    value_ms: int
    created_at: str
    first_attempt_at: str | None = None  # when a worker first sent it
    resends: int = 0  # times an operator resent it after checking Stripe's totals

    @property
    def lane(self) -> Lane:
        return (self.customer, self.event_name)

    @property
    def identifier(self) -> str:
        """Stripe's dedupe key: the prediction id, then a fresh one per resend (Stripe may still
        hold the old one while the event it stood for failed validation)."""
        return self.prediction_id if not self.resends else f"{self.prediction_id}.r{self.resends}"


@dataclass(frozen=True)
class DeadLetter:
    event: MeterEvent
    reason: str
    dead_at: str


@dataclass(frozen=True)
class OutboxStats:
    backlog: int  # events waiting for Stripe
    oldest: str | None  # created_at of the oldest of them
    dead: int  # events Stripe could not take, waiting for an operator


class UsageStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    # --- billing ------------------------------------------------------------------------------

    def record_usage(self, usage: Usage, event_name: str | None) -> tuple[Usage, bool]:
        """Bills a prediction at most once. Returns the stored row and whether this call wrote
        it; the meter event for a customer is written in the same transaction."""
        with self.database.transaction() as cur:
            cur.execute(
                f"INSERT INTO billed_usage ({_USAGE}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "  # noqa: S608 -- constant columns
                "COALESCE(?, (SELECT key_id FROM predictions WHERE id = ?))) "
                "ON CONFLICT (prediction_id) DO NOTHING RETURNING key_id",
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
                    usage.kind,
                    usage.key_id,
                    usage.prediction_id,
                ),
            )
            # RETURNING: one row if this call wrote it, none if it was billed before.
            written = cur.fetchone()
            inserted = written is not None
            key_id = written[0] if written is not None else None
            if inserted and usage.stripe_customer is not None:
                add_spend(
                    cur,
                    self.database.dialect,
                    usage.stripe_customer,
                    key_id,
                    usage.created_at,
                    Decimal(usage.amount),
                )
            # Nothing to meter for the demo (the owner's cost) or for 0 ms (a free cache hit).
            metered = (
                usage.stripe_customer is not None and event_name is not None and usage.predict_time_ms > 0
            )
            if inserted and metered:
                cur.execute(
                    "INSERT INTO meter_outbox (prediction_id, customer, event_name, value_ms, created_at) "
                    "VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (prediction_id) DO NOTHING",
                    (
                        usage.prediction_id,
                        usage.stripe_customer,
                        event_name,
                        usage.predict_time_ms,
                        usage.created_at,
                    ),
                )
                cur.execute(
                    "INSERT INTO meter_lanes (customer, event_name) VALUES (?, ?) "
                    "ON CONFLICT (customer, event_name) DO NOTHING",
                    (usage.stripe_customer, event_name),
                )
            if inserted:
                return dataclasses.replace(usage, key_id=key_id), True
            cur.execute(f"SELECT {_USAGE} FROM billed_usage WHERE prediction_id = ?", (usage.prediction_id,))  # noqa: S608
            row = cur.fetchone()
        return Usage(*row), False

    def usage_of(self, caller: str) -> list[Usage]:
        with self.database.transaction() as cur:
            cur.execute(
                f"SELECT {_USAGE} FROM billed_usage WHERE caller = ? ORDER BY created_at, prediction_id",  # noqa: S608
                (caller,),
            )
            return [Usage(*row) for row in cur.fetchall()]

    def usage_for(self, prediction_id: str) -> Usage | None:
        with self.database.read() as cur:
            cur.execute(f"SELECT {_USAGE} FROM billed_usage WHERE prediction_id = ?", (prediction_id,))  # noqa: S608
            row = cur.fetchone()
        return Usage(*row) if row else None

    # --- the outbox, drained by the meter workers ---------------------------------------------

    def claim_lanes(self, owner: str, now: str, until: str, limit: int) -> list[Lane]:
        """Leases up to `limit` lanes that have pending events and no live lease, to `owner`
        until `until`."""
        skip_locked = " FOR UPDATE SKIP LOCKED" if self.database.dialect == "postgresql" else ""
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT customer, event_name FROM meter_lanes l "  # noqa: S608 -- a constant suffix
                "WHERE (lease_until IS NULL OR lease_until < ? OR lease_owner = ?) AND EXISTS ("
                "SELECT 1 FROM meter_outbox o WHERE o.customer = l.customer AND o.event_name = l.event_name "
                "AND o.delivered_at IS NULL AND o.dead_at IS NULL) "
                f"ORDER BY customer, event_name LIMIT ?{skip_locked}",
                (now, owner, limit),
            )
            lanes = [(customer, name) for customer, name in cur.fetchall()]
            for customer, name in lanes:
                cur.execute(
                    "UPDATE meter_lanes SET lease_owner = ?, lease_until = ? "
                    "WHERE customer = ? AND event_name = ?",
                    (owner, until, customer, name),
                )
        return lanes

    def pending_in(self, lane: Lane, limit: int, after: tuple[str, str] | None = None) -> list[MeterEvent]:
        """A lane's undelivered events, oldest first; `after` = (created_at, prediction_id) to page on."""
        created_at, prediction_id = after or ("", "")
        with self.database.transaction() as cur:
            cur.execute(
                f"SELECT {_EVENT} FROM meter_outbox WHERE customer = ? AND event_name = ? AND {PENDING} "  # noqa: S608
                "AND (created_at > ? OR (created_at = ? AND prediction_id > ?)) "
                "ORDER BY created_at, prediction_id LIMIT ?",
                (*lane, created_at, created_at, prediction_id, limit),
            )
            return [MeterEvent(*row) for row in cur.fetchall()]

    def renew(self, owner: str, until: str) -> int:
        """Extends every lease `owner` holds; returns how many it still holds."""
        with self.database.transaction() as cur:
            cur.execute("UPDATE meter_lanes SET lease_until = ? WHERE lease_owner = ?", (until, owner))
            return cur.rowcount

    def release(self, owner: str, lane: Lane) -> None:
        with self.database.transaction() as cur:
            cur.execute(
                "UPDATE meter_lanes SET lease_owner = NULL, lease_until = NULL "
                "WHERE lease_owner = ? AND customer = ? AND event_name = ?",
                (owner, *lane),
            )

    def mark_attempted(self, prediction_ids: list[str], at: str) -> dict[str, str]:
        """Records the first attempt of each event that has none; returns each one's first
        attempt as stored (another worker's, if it tried first)."""
        with self.database.transaction() as cur:
            for prediction_id in prediction_ids:
                cur.execute(
                    "UPDATE meter_outbox SET first_attempt_at = ? "
                    "WHERE prediction_id = ? AND first_attempt_at IS NULL",
                    (at, prediction_id),
                )
            found = {}
            for prediction_id in prediction_ids:
                cur.execute(
                    "SELECT first_attempt_at FROM meter_outbox WHERE prediction_id = ?", (prediction_id,)
                )
                found[prediction_id] = str(cur.fetchone()[0])
        return found

    def mark_delivered(self, prediction_ids: list[str], at: str) -> None:
        """Stripe has these events. That is the truth whoever holds the lane now, and even if a
        worker whose lease had run out marked one dead meanwhile."""
        with self.database.transaction() as cur:
            for prediction_id in prediction_ids:
                cur.execute(
                    "UPDATE meter_outbox SET delivered_at = ?, dead_at = NULL, dead_reason = NULL "
                    "WHERE prediction_id = ? AND delivered_at IS NULL",
                    (at, prediction_id),
                )

    def dead_letter(self, prediction_id: str, reason: str, at: str) -> None:
        """Marks an undeliverable event dead, in place, keeping it for an operator."""
        with self.database.transaction() as cur:
            cur.execute(
                f"UPDATE meter_outbox SET dead_at = ?, dead_reason = ? WHERE prediction_id = ? AND {PENDING}",  # noqa: S608
                (at, reason, prediction_id),
            )

    def dead_letters(self, prediction_ids: list[str] | None = None) -> list[DeadLetter]:
        """Every dead event (or those named), oldest first."""
        with self.database.transaction() as cur:
            cur.execute(
                f"SELECT {_EVENT}, dead_reason, dead_at FROM meter_outbox WHERE dead_at IS NOT NULL "  # noqa: S608
                "ORDER BY created_at, prediction_id"
            )
            rows = [DeadLetter(MeterEvent(*row[:7]), str(row[7]), str(row[8])) for row in cur.fetchall()]
        wanted = set(prediction_ids or ())
        return [row for row in rows if not wanted or row.event.prediction_id in wanted]

    def requeue(self, event: MeterEvent) -> bool:
        """Gives a dead event back to the workers under a new identifier, once (a second operator
        resending it at the same moment finds it requeued already)."""
        with self.database.transaction() as cur:
            cur.execute(
                "UPDATE meter_outbox SET dead_at = NULL, dead_reason = NULL, first_attempt_at = NULL, "
                "resends = resends + 1 WHERE prediction_id = ? AND dead_at IS NOT NULL AND resends = ?",
                (event.prediction_id, event.resends),
            )
            return cur.rowcount == 1

    def found_at_stripe(self, prediction_id: str, at: str) -> bool:
        """A dead event Stripe's totals show it has: delivered after all."""
        with self.database.transaction() as cur:
            cur.execute(
                "UPDATE meter_outbox SET delivered_at = ?, dead_at = NULL, dead_reason = NULL "
                "WHERE prediction_id = ? AND dead_at IS NOT NULL",
                (at, prediction_id),
            )
            return cur.rowcount == 1

    def delivered_in(self, lane: Lane, since: str, until: str) -> int:
        """Delivered milliseconds of one lane, by usage time in [since, until)."""
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT SUM(value_ms) FROM meter_outbox WHERE customer = ? AND event_name = ? "
                "AND delivered_at IS NOT NULL AND created_at >= ? AND created_at < ?",
                (*lane, since, until),
            )
            return int(cur.fetchone()[0] or 0)

    def waiting_in(self, lane: Lane, since: str, until: str) -> int:
        """How many of a lane's events, by usage time in [since, until), wait for a worker."""
        with self.database.transaction() as cur:
            cur.execute(
                f"SELECT COUNT(*) FROM meter_outbox WHERE customer = ? AND event_name = ? AND {PENDING} "  # noqa: S608
                "AND created_at >= ? AND created_at < ?",
                (*lane, since, until),
            )
            return int(cur.fetchone()[0])

    def dead_meter_events(self) -> list[tuple[str, str]]:
        """(prediction_id, reason) of each dead event."""
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT prediction_id, dead_reason FROM meter_outbox WHERE dead_at IS NOT NULL "
                "ORDER BY created_at, prediction_id"
            )
            return [(prediction_id, reason) for prediction_id, reason in cur.fetchall()]

    def undelivered_meter_events(
        self, limit: int = 100, after: tuple[str, str] | None = None
    ) -> list[MeterEvent]:
        """Every lane's pending events, oldest first; `after` = (created_at, prediction_id) to page on."""
        created_at, prediction_id = after or ("", "")
        with self.database.transaction() as cur:
            cur.execute(
                f"SELECT {_EVENT} FROM meter_outbox WHERE {PENDING} "  # noqa: S608
                "AND (created_at > ? OR (created_at = ? AND prediction_id > ?)) "
                "ORDER BY created_at, prediction_id LIMIT ?",
                (created_at, created_at, prediction_id, limit),
            )
            return [MeterEvent(*row) for row in cur.fetchall()]

    def delivered_meter_totals(self, since: str, until: str) -> dict[Lane, int]:
        """Delivered milliseconds per (customer, event_name), by usage time in [since, until)."""
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT customer, event_name, SUM(value_ms) FROM meter_outbox "
                "WHERE delivered_at IS NOT NULL AND created_at >= ? AND created_at < ? "
                "GROUP BY customer, event_name",
                (since, until),
            )
            return {(customer, name): int(total) for customer, name, total in cur.fetchall()}

    def in_flight(self, since: str, until: str, delivered_after: str) -> dict[Lane, tuple[int, int]]:
        """Per lane, by usage time in [since, until): the milliseconds waiting for Stripe (it may
        have them already: an answer lost on the way), and those delivered after
        `delivered_after` (Stripe sums events asynchronously; it may not have counted them yet)."""
        with self.database.transaction() as cur:
            cur.execute(
                f"SELECT customer, event_name, SUM(CASE WHEN {PENDING} THEN value_ms ELSE 0 END), "  # noqa: S608
                "SUM(CASE WHEN delivered_at >= ? THEN value_ms ELSE 0 END) FROM meter_outbox "
                "WHERE created_at >= ? AND created_at < ? GROUP BY customer, event_name",
                (delivered_after, since, until),
            )
            return {(c, n): (int(pending or 0), int(recent or 0)) for c, n, pending, recent in cur.fetchall()}

    def billed_by_price(self, lane: Lane, since: str, until: str) -> list[tuple[str, int]]:
        """(price per second, milliseconds) the ledger billed on a lane's delivered events, by
        usage time in [since, until): what reconcile holds against the subscription's price."""
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT u.price_per_second, SUM(o.value_ms) FROM meter_outbox o "
                "JOIN billed_usage u ON u.prediction_id = o.prediction_id "
                "WHERE o.customer = ? AND o.event_name = ? AND o.delivered_at IS NOT NULL "
                "AND o.created_at >= ? AND o.created_at < ? GROUP BY u.price_per_second",
                (*lane, since, until),
            )
            return [(str(price), int(ms)) for price, ms in cur.fetchall()]

    def delivered_ids(self, event_name: str, until: str, customer: str | None = None) -> list[str]:
        """Identifiers of events delivered on a meter (for one customer, or all) by `until`
        (delivery time), for an error report that names more errors than its samples."""
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT prediction_id, resends, customer FROM meter_outbox WHERE event_name = ? "
                "AND delivered_at IS NOT NULL AND delivered_at <= ? ORDER BY prediction_id",
                (event_name, until),
            )
            rows = cur.fetchall()
        return [
            MeterEvent(pid, who, event_name, 0, "", None, int(resends)).identifier
            for pid, resends, who in rows
            if customer in (None, who)
        ]

    def delivered_lanes(self, until: str) -> set[Lane]:
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT DISTINCT customer, event_name FROM meter_outbox WHERE delivered_at IS NOT NULL "
                "AND delivered_at <= ?",
                (until,),
            )
            return {(customer, name) for customer, name in cur.fetchall()}

    def outbox_stats(self) -> OutboxStats:
        with self.database.transaction() as cur:
            cur.execute(f"SELECT COUNT(*), MIN(created_at) FROM meter_outbox WHERE {PENDING}")  # noqa: S608
            backlog, oldest = cur.fetchone()
            cur.execute("SELECT COUNT(*) FROM meter_outbox WHERE dead_at IS NOT NULL")
            (dead,) = cur.fetchone()
        return OutboxStats(int(backlog), oldest, int(dead))
