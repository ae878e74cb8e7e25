"""Spend caps: a monthly ceiling in USD on a customer, or on one of its keys, set by the owner
(`python -m proxy caps ...`) or by the customer (`PUT /v1/usage/cap` with its key).

What each has spent in the month (UTC) is a running total written in the transaction that writes
each bill (`add_spend`, from store.record_usage), under a row lock: PostgreSQL's `FOR UPDATE`, or
SQLite's one write lock. A create is admitted only while every cap on its caller is above what
was spent (`check`); a prediction's cost is known only once it has run, so N proxies overshoot a
cap by at most the predictions already admitted and still running for that key or customer.
The customer's own cap and the owner's both hold: the lower one bites, and a customer cannot lift
the owner's.
"""

from __future__ import annotations

import argparse
import datetime
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from proxy.billing.money import CENT, exact, to_cents
from proxy.config import Config
from proxy.errors import CommandError, PaymentRequired
from proxy.storage import Cursor, Database, open_database

Scope = Literal["customer", "key"]
SetBy = Literal["owner", "customer"]
MAX_CAP = Decimal(1_000_000)
_CUSTOMER = re.compile(r"cus_[A-Za-z0-9]+")


@dataclass(frozen=True)
class Cap:
    scope: Scope
    subject: str  # cus_... or a key id
    set_by: SetBy
    monthly: Decimal
    spent: Decimal  # this month

    @property
    def left(self) -> Decimal:
        return max(Decimal(0), self.monthly - self.spent)

    def view(self, period: str) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "set_by": self.set_by,
            "monthly": to_cents(self.monthly),
            "period": period,
            "spent": to_cents(self.spent),
            "remaining": to_cents(self.left),
        }


def period_of(moment: datetime.datetime) -> str:
    """The UTC month a moment falls in, as bills are dated: '2025-06'."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m")


def next_period(period: str) -> str:
    year, month = (int(part) for part in period.split("-"))
    return f"{year + month // 12}-{month % 12 + 1:02d}-01"


def parse_cap(value: Any, what: str = "monthly") -> Decimal:
    """A cap as a person writes it: '25', '25.50' (USD, whole cents, above 0)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f'{what} must be an amount in USD as a string, like "25.00"')
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f'{what} must be an amount in USD, like "25.00", not {value!r}') from None
    if not amount.is_finite() or amount <= 0 or amount > MAX_CAP or amount != amount.quantize(CENT):
        raise ValueError(f"{what} must be above 0, at most {MAX_CAP}, in whole cents; got {value!r}")
    return amount


class CapStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    def set(self, scope: Scope, subject: str, set_by: SetBy, monthly: Decimal, at: str) -> None:
        with self.database.transaction() as cur:
            cur.execute(
                "INSERT INTO spend_caps (scope, subject, set_by, monthly, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (scope, subject, set_by) DO UPDATE SET monthly = excluded.monthly, "
                "updated_at = excluded.updated_at",
                (scope, subject, set_by, exact(monthly), at),
            )

    def clear(self, scope: Scope, subject: str, set_by: SetBy) -> bool:
        with self.database.transaction() as cur:
            cur.execute(
                "DELETE FROM spend_caps WHERE scope = ? AND subject = ? AND set_by = ?",
                (scope, subject, set_by),
            )
            return cur.rowcount == 1

    def caps_of(self, customer: str, key_id: str | None, period: str) -> list[Cap]:
        """Every cap on a customer and (if given) one of its keys, with this period's spend."""
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT scope, subject, set_by, monthly FROM spend_caps "
                "WHERE (scope = 'customer' AND subject = ?) OR (scope = 'key' AND subject = ?) "
                "ORDER BY scope, set_by",
                (customer, key_id or ""),
            )
            found = cur.fetchall()
            return [
                Cap(scope, subject, set_by, Decimal(monthly), _spent(cur, scope, subject, period))
                for scope, subject, set_by, monthly in found
            ]

    def all_caps(self, period: str) -> list[Cap]:
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT scope, subject, set_by, monthly FROM spend_caps ORDER BY scope, subject, set_by"
            )
            found = cur.fetchall()
            return [
                Cap(s, subject, by, Decimal(m), _spent(cur, s, subject, period))
                for s, subject, by, m in found
            ]


def check(caps: list[Cap], period: str) -> None:
    """Raises PaymentRequired (402) naming the first cap reached: its amount, the month, what is
    left, and when it resets."""
    for cap in caps:
        if cap.spent >= cap.monthly:
            whose = "this API key" if cap.scope == "key" else "this customer"
            setter = "you" if cap.set_by == "customer" else "the owner of this portfolio"
            raise PaymentRequired(
                f"the monthly spend cap of ${to_cents(cap.monthly)} on {whose} (set by {setter}) is reached "
                f"for {period}: ${to_cents(cap.spent)} spent, ${to_cents(cap.left)} left; it resets on "
                f"{next_period(period)} (UTC)"
                + ("; raise it with PUT /v1/usage/cap" if cap.set_by == "customer" else "")
            )


def add_spend(
    cur: Cursor, dialect: str, customer: str, key_id: str | None, created_at: str, amount: Decimal
) -> None:
    """Adds a new bill's amount to its month's totals, in the bill's own transaction."""
    period = created_at[:7]
    for scope, subject in (("customer", customer), ("key", key_id)):
        if subject is None:
            continue
        cur.execute(
            "INSERT INTO spend_totals (scope, subject, period, amount) VALUES (?, ?, ?, '0') "
            "ON CONFLICT (scope, subject, period) DO NOTHING",
            (scope, subject, period),
        )
        first = cur.rowcount == 1
        lock = " FOR UPDATE" if dialect == "postgresql" else ""
        cur.execute(
            f"SELECT amount FROM spend_totals WHERE scope = ? AND subject = ? AND period = ?{lock}",  # noqa: S608
            (scope, subject, period),
        )
        total = Decimal(cur.fetchone()[0]) + amount
        if first:  # the month's bills so far, this one included (some may predate the totals)
            total = _summed(cur, scope, subject, period)
        cur.execute(
            "UPDATE spend_totals SET amount = ? WHERE scope = ? AND subject = ? AND period = ?",
            (exact(total), scope, subject, period),
        )


def _spent(cur: Cursor, scope: str, subject: str, period: str) -> Decimal:
    cur.execute(
        "SELECT amount FROM spend_totals WHERE scope = ? AND subject = ? AND period = ?",
        (scope, subject, period),
    )
    row = cur.fetchone()
    return Decimal(row[0]) if row else _summed(cur, scope, subject, period)


def _summed(cur: Cursor, scope: str, subject: str, period: str) -> Decimal:
    """The exact sum of a month's bills (amounts are decimal strings: summed here, not in SQL)."""
    column = "stripe_customer" if scope == "customer" else "key_id"
    cur.execute(
        f"SELECT amount FROM billed_usage WHERE {column} = ? AND created_at >= ? AND created_at < ?",  # noqa: S608
        (subject, f"{period}-01", f"{next_period(period)}"),
    )
    return sum((Decimal(amount) for (amount,) in cur.fetchall()), Decimal(0))


def run_caps(args: argparse.Namespace, config: Config) -> int:
    """`python -m proxy caps set|clear|list`: the owner's caps (a customer's own are theirs)."""
    database = open_database(config.database_url)
    store = CapStore(database)
    now = datetime.datetime.now(datetime.UTC)
    try:
        if args.action == "list":
            period = period_of(now)
            spent = f"SPENT {period}"
            print(f"{'SCOPE':<10}{'SUBJECT':<24}{'SET BY':<10}{'MONTHLY':>12}{spent:>16}{'LEFT':>12}")
            for cap in store.all_caps(period):
                view = cap.view(period)
                print(
                    f"{cap.scope:<10}{cap.subject:<24}{cap.set_by:<10}{view['monthly']:>12}"
                    f"{view['spent']:>16}{view['remaining']:>12}"
                )
            return 0
        scope: Scope = "customer" if args.customer else "key"
        subject = args.customer or args.key
        if scope == "customer" and not _CUSTOMER.fullmatch(subject):
            raise CommandError(f"{subject!r} is not a Stripe customer id (cus_...)")
        if args.action == "clear":
            if not store.clear(scope, subject, "owner"):
                raise CommandError(f"the owner has set no cap on {scope} {subject}")
            print(f"Removed the owner's monthly cap on {scope} {subject}.")
            return 0
        try:
            monthly = parse_cap(args.monthly, "--monthly")
        except ValueError as error:
            raise CommandError(str(error)) from None
        store.set(scope, subject, "owner", monthly, now.isoformat(timespec="microseconds"))
        print(f"{scope.capitalize()} {subject} may spend at most ${to_cents(monthly)} a month (UTC).")
        return 0
    finally:
        database.close()
