"""The authors' side of the ledger: authors and their Express accounts, which invoice paid each
prediction's author share, and one payout (the transfer to make) per author per invoice, all
written in the transaction that records the Stripe event that caused them, so that a replayed
event changes nothing and a crash leaves either everything or nothing.

Nothing here calls Stripe: the transfers and reversals written here are the outbox that
proxy/billing/payouts/worker.py delivers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from proxy._payouts_config import AuthorShare
from proxy.billing.payouts.shares import reversal_target, share_of, transfer_for
from proxy.storage import Cursor, Database

_AUTHOR = "handle, account_id, email, payouts_enabled, details_submitted, carry, created_at, updated_at"
PAYOUT = (
    "invoice_id, author, customer, charge_id, charge_cents, currency, earned, carried_in, cents, "
    "carried_out, created_at, generation, transfer_id, delivered_at, dead_at, dead_reason"
)
REVERSAL = (
    "invoice_id, author, refunded_cents, cents, created_at, generation, reversal_id, delivered_at, "
    "dead_at, dead_reason"
)

Event = tuple[str, str]  # a Stripe event's (id, type)


@dataclass(frozen=True)
class Author:
    handle: str
    account_id: str | None
    email: str | None
    payouts_enabled: bool
    details_submitted: bool
    carry: str  # exact, below a cent: added to the author's next transfer
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class Payout:
    invoice_id: str
    author: str
    customer: str
    charge_id: str | None  # the transfer's source_transaction; None: the invoice charged nothing
    charge_cents: int
    currency: str
    earned: str
    carried_in: str
    cents: int
    carried_out: str
    created_at: str
    generation: int
    transfer_id: str | None
    delivered_at: str | None
    dead_at: str | None
    dead_reason: str | None


@dataclass(frozen=True)
class Reversal:
    invoice_id: str
    author: str
    refunded_cents: int  # the charge's refunded total this reversal answers
    cents: int
    created_at: str
    generation: int
    reversal_id: str | None
    delivered_at: str | None
    dead_at: str | None
    dead_reason: str | None


@dataclass(frozen=True)
class UsageLine:
    """An invoice line for a meter's usage: the predictions of that meter in [start, end)."""

    event_name: str
    start: str  # ISO 8601 UTC, whole seconds, as Stripe's period.start
    end: str
    quantity: int | None  # what Stripe counted (milliseconds), for a cross-check only


@dataclass(frozen=True)
class PaidInvoice:
    invoice_id: str
    customer: str
    currency: str
    charge_id: str | None
    charge_cents: int
    refunded_cents: int
    lines: tuple[UsageLine, ...]


@dataclass(frozen=True)
class Recorded:
    payouts: list[Payout]
    predictions: int  # shared out by this invoice
    ledger_ms: dict[str, int]  # per meter, what the ledger holds for the invoice's lines


class PayoutLedger:
    def __init__(self, database: Database) -> None:
        self.database = database

    # --- authors ------------------------------------------------------------------------------

    def add_author(self, handle: str, email: str | None, at: str) -> Author:
        with self.database.transaction() as cur:
            _ensure_author(cur, handle, at)
            if email is not None:
                cur.execute(
                    "UPDATE authors SET email = ?, updated_at = ? WHERE handle = ?", (email, at, handle)
                )
            return _author(cur, handle)

    def set_account(self, handle: str, account_id: str, at: str) -> None:
        with self.database.transaction() as cur:
            cur.execute(
                "UPDATE authors SET account_id = ?, updated_at = ? WHERE handle = ? AND account_id IS NULL",
                (account_id, at, handle),
            )

    def author(self, handle: str) -> Author | None:
        with self.database.transaction() as cur:
            cur.execute(f"SELECT {_AUTHOR} FROM authors WHERE handle = ?", (handle,))  # noqa: S608
            row = cur.fetchone()
        return _to_author(row) if row else None

    def authors(self) -> list[Author]:
        with self.database.transaction() as cur:
            cur.execute(f"SELECT {_AUTHOR} FROM authors ORDER BY handle")  # noqa: S608
            return [_to_author(row) for row in cur.fetchall()]

    def update_account(
        self, event: Event, account_id: str, payouts_enabled: bool, details_submitted: bool, at: str
    ) -> Author | None:
        """Stripe's word on an account (`account.updated`); None when the event was seen or the
        account is no author's."""
        with self.database.transaction() as cur:
            if not claim_event(cur, *event, at):
                return None
            cur.execute(
                "UPDATE authors SET payouts_enabled = ?, details_submitted = ?, updated_at = ? "
                "WHERE account_id = ?",
                (int(payouts_enabled), int(details_submitted), at, account_id),
            )
            cur.execute(f"SELECT {_AUTHOR} FROM authors WHERE account_id = ?", (account_id,))  # noqa: S608
            row = cur.fetchone()
        return _to_author(row) if row else None

    # --- invoices and refunds -----------------------------------------------------------------

    def record_invoice(
        self, event: Event, invoice: PaidInvoice, authors: dict[str, AuthorShare], at: str
    ) -> Recorded | None:
        """Shares out the predictions on a paid invoice: each claimed once, one payout per author
        (their carry added, one rounding), the charge's refunds so far reversed at once. None
        when the event was seen before. `authors`: by owner/name, from [payouts]."""
        with self.database.transaction() as cur:
            if not claim_event(cur, *event, at):
                return None
            earned: dict[str, Decimal] = defaultdict(Decimal)
            predictions, ledger_ms = 0, {}
            for line in invoice.lines:
                rows = _usage_in(cur, invoice.customer, line)
                ledger_ms[line.event_name] = sum(ms for _, _, _, ms in rows)
                for prediction_id, model, amount, _ in rows:
                    rule = authors.get(model)
                    if rule is None:
                        continue  # the owner's own model: nothing to share
                    share = share_of(Decimal(amount), rule.share)
                    cur.execute(
                        "INSERT INTO payout_items (prediction_id, invoice_id, author, share, amount) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (prediction_id) DO NOTHING",
                        (prediction_id, invoice.invoice_id, rule.author, str(rule.share), str(share)),
                    )
                    if cur.rowcount == 1:
                        earned[rule.author] += share
                        predictions += 1
            payouts = [self._payout(cur, invoice, author, earned[author], at) for author in sorted(earned)]
            if invoice.charge_id is not None and invoice.refunded_cents > 0:
                _reverse(cur, invoice.charge_id, invoice.charge_cents, invoice.refunded_cents, at)
        return Recorded([p for p in payouts if p is not None], predictions, ledger_ms)

    def _payout(
        self, cur: Cursor, invoice: PaidInvoice, author: str, earned: Decimal, at: str
    ) -> Payout | None:
        _ensure_author(cur, author, at)
        lock = " FOR UPDATE" if self.database.dialect == "postgresql" else ""
        cur.execute(f"SELECT carry FROM authors WHERE handle = ?{lock}", (author,))  # noqa: S608
        (carry,) = cur.fetchone()
        transfer = transfer_for(earned, Decimal(carry), collected=invoice.charge_id is not None)
        # Nothing to send is settled at once: it is the carry that moves, not money.
        delivered = at if transfer.cents == 0 else None
        cur.execute(
            f"INSERT INTO payouts ({PAYOUT}) "  # noqa: S608 -- constant columns
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, ?, NULL, NULL) "
            "ON CONFLICT (invoice_id, author) DO NOTHING",
            (
                invoice.invoice_id,
                author,
                invoice.customer,
                invoice.charge_id,
                invoice.charge_cents,
                invoice.currency,
                *transfer.as_text(),
                at,
                delivered,
            ),
        )
        if cur.rowcount != 1:
            return None
        cur.execute(
            "UPDATE authors SET carry = ?, updated_at = ? WHERE handle = ?",
            (transfer.as_text()[3], at, author),
        )
        cur.execute("INSERT INTO payout_lanes (author) VALUES (?) ON CONFLICT (author) DO NOTHING", (author,))
        where = (invoice.invoice_id, author)
        cur.execute(f"SELECT {PAYOUT} FROM payouts WHERE invoice_id = ? AND author = ?", where)  # noqa: S608
        return Payout(*cur.fetchone())

    def record_refund(
        self, event: Event, charge_id: str, charge_cents: int, refunded_cents: int, at: str
    ) -> list[Reversal] | None:
        """A charge refunded `refunded_cents` in all so far: each transfer from it is reversed
        to the same fraction. None when the event was seen before."""
        with self.database.transaction() as cur:
            if not claim_event(cur, *event, at):
                return None
            return _reverse(cur, charge_id, charge_cents, refunded_cents, at)

    def payouts_of(self, invoice_id: str) -> list[Payout]:
        with self.database.transaction() as cur:
            cur.execute(f"SELECT {PAYOUT} FROM payouts WHERE invoice_id = ? ORDER BY author", (invoice_id,))  # noqa: S608
            return [Payout(*row) for row in cur.fetchall()]

    def reversals_of(self, invoice_id: str) -> list[Reversal]:
        with self.database.transaction() as cur:
            cur.execute(
                f"SELECT {REVERSAL} FROM payout_reversals WHERE invoice_id = ? "  # noqa: S608
                "ORDER BY author, refunded_cents",
                (invoice_id,),
            )
            return [Reversal(*row) for row in cur.fetchall()]


def claim_event(cur: Cursor, event_id: str, event_type: str, at: str) -> bool:
    """The event's id in `stripe_events`, in the transaction that applies it (as stripe_store does)."""
    cur.execute(
        "INSERT INTO stripe_events (id, type, received_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (event_id, event_type, at),
    )
    return cur.rowcount == 1


def _ensure_author(cur: Cursor, handle: str, at: str) -> None:
    cur.execute(
        "INSERT INTO authors (handle, created_at, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (handle) DO NOTHING",
        (handle, at, at),
    )


def _author(cur: Cursor, handle: str) -> Author:
    cur.execute(f"SELECT {_AUTHOR} FROM authors WHERE handle = ?", (handle,))  # noqa: S608
    return _to_author(cur.fetchone())


def _to_author(row: tuple[object, ...]) -> Author:
    handle, account, email, enabled, submitted, carry, created, updated = row
    return Author(
        str(handle),
        account if isinstance(account, str) else None,
        email if isinstance(email, str) else None,
        bool(enabled),
        bool(submitted),
        str(carry),
        str(created),
        str(updated),
    )


def _usage_in(cur: Cursor, customer: str, line: UsageLine) -> list[tuple[str, str, str, int]]:
    """The customer's predictions on a line: metered on its meter, delivered to Stripe, in its
    period (Stripe sums a meter's events by their timestamp, the usage row's time)."""
    cur.execute(
        "SELECT u.prediction_id, u.model, u.amount, u.predict_time_ms FROM billed_usage u "
        "JOIN meter_outbox o ON o.prediction_id = u.prediction_id "
        "WHERE u.stripe_customer = ? AND u.created_at >= ? AND u.created_at < ? "
        "AND o.delivered_at IS NOT NULL AND o.event_name = ? ORDER BY u.created_at, u.prediction_id",
        (customer, line.start, line.end, line.event_name),
    )
    return [(prediction_id, model, amount, int(ms)) for prediction_id, model, amount, ms in cur.fetchall()]


def _reverse(cur: Cursor, charge_id: str, charge_cents: int, refunded_cents: int, at: str) -> list[Reversal]:
    cur.execute(
        "SELECT invoice_id, author, cents FROM payouts WHERE charge_id = ? AND cents > 0 ORDER BY author",
        (charge_id,),
    )
    made = []
    for invoice_id, author, cents in cur.fetchall():
        cur.execute(
            "SELECT COALESCE(SUM(cents), 0) FROM payout_reversals WHERE invoice_id = ? AND author = ?",
            (invoice_id, author),
        )
        (already,) = cur.fetchone()
        more = reversal_target(int(cents), refunded_cents, charge_cents) - int(already)
        if more <= 0:
            continue
        cur.execute(
            f"INSERT INTO payout_reversals ({REVERSAL}) VALUES (?, ?, ?, ?, ?, 0, NULL, NULL, NULL, NULL) "  # noqa: S608
            "ON CONFLICT (invoice_id, author, refunded_cents) DO NOTHING",
            (invoice_id, author, refunded_cents, more, at),
        )
        if cur.rowcount == 1:
            made.append(Reversal(invoice_id, author, refunded_cents, more, at, 0, None, None, None, None))
    return made
