"""The transfer outbox, drained the way the meter outbox is (proxy/billing/store.py): the unit of
work is a lane, one author's transfers and reversals, leased by one worker at a time, renewed
while it works, free again when the lease runs out (its worker died). Only authors whose
account can be paid (`payouts_enabled`) have their lanes claimed: the others' payouts wait, and
are their pending balance. A reversal waits for its transfer to be delivered.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.billing.payouts.store import PAYOUT, REVERSAL, Payout, Reversal
from proxy.storage import Database

_WAITING = "delivered_at IS NULL AND dead_at IS NULL"


def _waiting(alias: str) -> str:
    return f"{alias}.delivered_at IS NULL AND {alias}.dead_at IS NULL"


_PAYABLE = "a.payouts_enabled = 1 AND a.account_id IS NOT NULL"


@dataclass(frozen=True)
class Work:
    """What one lane has to send now: its author's account, its transfers, then its reversals
    (each with the transfer it reverses)."""

    author: str
    account_id: str
    transfers: list[Payout]
    reversals: list[tuple[Reversal, str]]


@dataclass(frozen=True)
class PayoutStats:
    transfers_waiting: int  # payouts to authors who can be paid, not sent yet
    reversals_waiting: int
    held_cents: int  # owed to authors who cannot be paid yet (no account, or payouts off)
    dead: int  # transfers and reversals Stripe refused, waiting for an operator


@dataclass(frozen=True)
class Balance:
    author: str
    account_id: str | None
    payouts_enabled: bool
    transferred_cents: int  # delivered transfers less delivered reversals
    pending_cents: int  # payouts not delivered yet, less their reversals
    carry: str  # below a cent, added to the next transfer


@dataclass(frozen=True)
class Delivered:
    """A transfer the ledger says Stripe made, and the reversals it says Stripe made of it."""

    invoice_id: str
    author: str
    account_id: str | None
    transfer_id: str
    cents: int
    reversed_cents: int


class TransferOutbox:
    def __init__(self, database: Database) -> None:
        self.database = database

    def claim_lanes(self, owner: str, now: str, until: str, limit: int) -> list[str]:
        skip_locked = " FOR UPDATE OF l SKIP LOCKED" if self.database.dialect == "postgresql" else ""
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT l.author FROM payout_lanes l JOIN authors a ON a.handle = l.author "  # noqa: S608 -- constants
                "WHERE (l.lease_until IS NULL OR l.lease_until < ? OR l.lease_owner = ?) "
                "AND a.payouts_enabled = 1 AND a.account_id IS NOT NULL AND ("
                f"EXISTS (SELECT 1 FROM payouts p WHERE p.author = l.author AND {_waiting('p')}) OR "
                "EXISTS (SELECT 1 FROM payout_reversals r JOIN payouts p ON p.invoice_id = r.invoice_id "
                f"AND p.author = r.author WHERE r.author = l.author AND {_waiting('r')} "
                f"AND p.transfer_id IS NOT NULL)) ORDER BY l.author LIMIT ?{skip_locked}",
                (now, owner, limit),
            )
            lanes = [author for (author,) in cur.fetchall()]
            for author in lanes:
                cur.execute(
                    "UPDATE payout_lanes SET lease_owner = ?, lease_until = ? WHERE author = ?",
                    (owner, until, author),
                )
        return lanes

    def work(self, author: str) -> Work | None:
        """The lane's waiting transfers and sendable reversals, oldest first; None if its
        author cannot be paid now."""
        with self.database.transaction() as cur:
            cur.execute("SELECT account_id, payouts_enabled FROM authors WHERE handle = ?", (author,))
            row = cur.fetchone()
            if row is None or row[0] is None or not row[1]:
                return None
            cur.execute(
                f"SELECT {PAYOUT} FROM payouts WHERE author = ? AND {_WAITING} "  # noqa: S608 -- constants
                "ORDER BY created_at, invoice_id",
                (author,),
            )
            transfers = [Payout(*r) for r in cur.fetchall()]
            columns = ", ".join(f"r.{column.strip()}" for column in REVERSAL.split(","))
            cur.execute(
                f"SELECT {columns}, p.transfer_id FROM payout_reversals r JOIN payouts p "  # noqa: S608
                "ON p.invoice_id = r.invoice_id AND p.author = r.author "
                f"WHERE r.author = ? AND {_waiting('r')} AND p.transfer_id IS NOT NULL "
                "ORDER BY r.created_at, r.invoice_id, r.refunded_cents",
                (author,),
            )
            reversals = [(Reversal(*r[:-1]), str(r[-1])) for r in cur.fetchall()]
        return Work(author, str(row[0]), transfers, reversals)

    def renew(self, owner: str, until: str) -> int:
        with self.database.transaction() as cur:
            cur.execute("UPDATE payout_lanes SET lease_until = ? WHERE lease_owner = ?", (until, owner))
            return cur.rowcount

    def release(self, owner: str, author: str) -> None:
        with self.database.transaction() as cur:
            cur.execute(
                "UPDATE payout_lanes SET lease_owner = NULL, lease_until = NULL "
                "WHERE lease_owner = ? AND author = ?",
                (owner, author),
            )

    def next_generation(self, payout: Payout | Reversal) -> int:
        """After a 5xx, whose answer Stripe replays for the same idempotency key, the next try
        needs a new key: kept in the ledger, so that a worker taking over does not reuse it."""
        table, where, key = _row(payout)
        with self.database.transaction() as cur:
            cur.execute(f"UPDATE {table} SET generation = generation + 1 WHERE {where}", key)  # noqa: S608
            cur.execute(f"SELECT generation FROM {table} WHERE {where}", key)  # noqa: S608
            return int(cur.fetchone()[0])

    def mark_sent(self, payout: Payout | Reversal, stripe_id: str, at: str) -> None:
        """Stripe made it (`tr_...` or `trr_...`): true whoever holds the lane now."""
        table, where, key = _row(payout)
        column = "transfer_id" if isinstance(payout, Payout) else "reversal_id"
        with self.database.transaction() as cur:
            cur.execute(
                f"UPDATE {table} SET {column} = ?, delivered_at = ?, dead_at = NULL, dead_reason = NULL "  # noqa: S608
                f"WHERE {where} AND delivered_at IS NULL",
                (stripe_id, at, *key),
            )

    def dead_letter(self, payout: Payout | Reversal, reason: str, at: str) -> None:
        table, where, key = _row(payout)
        with self.database.transaction() as cur:
            cur.execute(
                f"UPDATE {table} SET dead_at = ?, dead_reason = ? WHERE {where} AND {_WAITING}",  # noqa: S608
                (at, reason, *key),
            )

    def stats(self) -> PayoutStats:
        with self.database.transaction() as cur:
            cur.execute(
                f"SELECT {_PAYABLE}, COUNT(*), COALESCE(SUM(p.cents), 0) "  # noqa: S608 -- constants
                f"FROM payouts p JOIN authors a ON a.handle = p.author WHERE {_waiting('p')} "
                f"GROUP BY {_PAYABLE}"
            )
            waiting, held = 0, 0
            for payable, count, cents in cur.fetchall():
                if payable:
                    waiting += int(count)
                else:
                    held += int(cents)
            cur.execute(f"SELECT COUNT(*) FROM payout_reversals WHERE {_WAITING}")  # noqa: S608
            (reversals,) = cur.fetchone()
            cur.execute(
                "SELECT (SELECT COUNT(*) FROM payouts WHERE dead_at IS NOT NULL) + "
                "(SELECT COUNT(*) FROM payout_reversals WHERE dead_at IS NOT NULL)"
            )
            (dead,) = cur.fetchone()
        return PayoutStats(waiting, int(reversals), held, int(dead))

    def balances(self) -> list[Balance]:
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT a.handle, a.account_id, a.payouts_enabled, a.carry, "  # noqa: S608 -- constants
                "(SELECT COALESCE(SUM(p.cents), 0) FROM payouts p WHERE p.author = a.handle "
                "AND p.transfer_id IS NOT NULL), "
                "(SELECT COALESCE(SUM(r.cents), 0) FROM payout_reversals r WHERE r.author = a.handle "
                "AND r.reversal_id IS NOT NULL), "
                "(SELECT COALESCE(SUM(p.cents), 0) FROM payouts p "
                f"WHERE p.author = a.handle AND {_waiting('p')}), "
                "(SELECT COALESCE(SUM(r.cents), 0) FROM payout_reversals r JOIN payouts p "
                "ON p.invoice_id = r.invoice_id AND p.author = r.author "
                f"WHERE r.author = a.handle AND r.delivered_at IS NULL AND {_waiting('p')}) "
                "FROM authors a ORDER BY a.handle"
            )
            return [
                Balance(
                    row[0], row[1], bool(row[2]), int(row[4]) - int(row[5]), int(row[6]) - int(row[7]), row[3]
                )
                for row in cur.fetchall()
            ]

    def delivered(self) -> list[Delivered]:
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT p.invoice_id, p.author, a.account_id, p.transfer_id, p.cents, "
                "(SELECT COALESCE(SUM(r.cents), 0) FROM payout_reversals r WHERE r.invoice_id = p.invoice_id "
                "AND r.author = p.author AND r.reversal_id IS NOT NULL) "
                "FROM payouts p JOIN authors a ON a.handle = p.author WHERE p.transfer_id IS NOT NULL "
                "ORDER BY p.invoice_id, p.author"
            )
            return [
                Delivered(invoice, author, account, transfer, int(cents), int(reversed_))
                for invoice, author, account, transfer, cents, reversed_ in cur.fetchall()
            ]


def _row(item: Payout | Reversal) -> tuple[str, str, tuple[object, ...]]:
    if isinstance(item, Payout):
        return "payouts", "invoice_id = ? AND author = ?", (item.invoice_id, item.author)
    return (
        "payout_reversals",
        "invoice_id = ? AND author = ? AND refunded_cents = ?",
        (item.invoice_id, item.author, item.refunded_cents),
    )
