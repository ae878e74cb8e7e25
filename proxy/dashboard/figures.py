"""What the owner dashboard shows for a period, read from the ledger (read only, on either
database): predictions and revenue per model and per day, p50/p99 predict time, the result
cache's hit rate, the top customers, author payouts and pending balances, the outboxes.

Revenue is exact: a usage line's amount is price_per_second x ms / 1000, so the ledger sums the
milliseconds per (model, day, price) and the amount is computed once per group in Decimal;
nothing passes through a float. Percentiles are nearest-rank, read with ORDER BY ... OFFSET so
that neither database needs a percentile function.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

from proxy.billing.money import amount_for
from proxy.billing.payouts.outbox import Balance, PayoutStats, TransferOutbox
from proxy.billing.store import OutboxStats, UsageStore
from proxy.storage import Cursor, Database

TOP_CUSTOMERS = 10


@dataclass(frozen=True)
class Period:
    first: datetime.date
    last: datetime.date  # inclusive

    @property
    def days(self) -> list[datetime.date]:
        return [self.first + datetime.timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    @property
    def since(self) -> str:
        return f"{self.first.isoformat()}T00:00:00"

    @property
    def until(self) -> str:
        return f"{(self.last + datetime.timedelta(days=1)).isoformat()}T00:00:00"


@dataclass
class ModelFigures:
    model: str
    predictions: int = 0
    revenue: Decimal = Decimal(0)
    cache_hits: int = 0
    p50_ms: int | None = None
    p99_ms: int | None = None

    @property
    def hit_rate(self) -> Decimal | None:
        return Decimal(self.cache_hits) / self.predictions if self.predictions else None


@dataclass(frozen=True)
class Customer:
    customer: str
    predictions: int
    revenue: Decimal


@dataclass(frozen=True)
class AuthorFigures:
    balance: Balance
    paid_in_period_cents: int  # transferred in the period, less what was reversed in it


@dataclass
class Figures:
    period: Period
    models: list[ModelFigures]
    predictions_by_day: dict[str, dict[str, int]]  # model -> day -> predictions
    revenue_by_day: dict[str, dict[str, Decimal]]  # model -> day -> revenue
    customers: list[Customer]
    authors: list[AuthorFigures]
    meter_outbox: OutboxStats
    payouts: PayoutStats
    totals: dict[str, Decimal] = field(default_factory=dict)


def read_figures(database: Database, period: Period) -> Figures:
    """Blocking: the app calls it from a worker thread."""
    with database.read() as cur:  # no write lock: the figures may straddle a bill
        models, by_day, revenue_by_day = _per_model_and_day(cur, period)
        for model in models.values():
            model.p50_ms, model.p99_ms = _percentiles(cur, model.model, period)
        customers = _top_customers(cur, period)
        paid = _paid_in(cur, period)
    outbox = TransferOutbox(database)
    authors = [AuthorFigures(balance, paid.get(balance.author, 0)) for balance in outbox.balances()]
    ordered = sorted(models.values(), key=lambda m: m.model)
    figures = Figures(
        period,
        ordered,
        by_day,
        revenue_by_day,
        customers,
        authors,
        UsageStore(database).outbox_stats(),
        outbox.stats(),
    )
    figures.totals = {
        "predictions": Decimal(sum(m.predictions for m in ordered)),
        "revenue": sum((m.revenue for m in ordered), Decimal(0)),
        "paid_cents": Decimal(sum(a.paid_in_period_cents for a in authors)),
        "pending_cents": Decimal(sum(a.balance.pending_cents for a in authors)),
    }
    return figures


def _per_model_and_day(
    cur: Cursor, period: Period
) -> tuple[dict[str, ModelFigures], dict[str, dict[str, int]], dict[str, dict[str, Decimal]]]:
    cur.execute(
        "SELECT model, substr(created_at, 1, 10), price_per_second, kind, COUNT(*), "
        "COALESCE(SUM(CASE WHEN stripe_customer IS NOT NULL THEN predict_time_ms ELSE 0 END), 0) "
        "FROM billed_usage WHERE created_at >= ? AND created_at < ? "
        "GROUP BY model, substr(created_at, 1, 10), price_per_second, kind",
        (period.since, period.until),
    )
    models: dict[str, ModelFigures] = {}
    by_day: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    revenue_by_day: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for model, day, price, kind, count, customer_ms in cur.fetchall():
        figures = models.setdefault(model, ModelFigures(model))
        revenue = amount_for(Decimal(price), int(customer_ms))
        figures.predictions += int(count)
        figures.revenue += revenue
        figures.cache_hits += int(count) if kind == "cache_hit" else 0
        by_day[model][day] += int(count)
        revenue_by_day[model][day] += revenue
    return models, by_day, revenue_by_day


def _percentiles(cur: Cursor, model: str, period: Period) -> tuple[int | None, int | None]:
    where = "model = ? AND kind = 'compute' AND created_at >= ? AND created_at < ?"
    params = (model, period.since, period.until)
    cur.execute(f"SELECT COUNT(*) FROM billed_usage WHERE {where}", params)  # noqa: S608 -- constant
    (count,) = cur.fetchone()
    if not count:
        return None, None
    found = []
    for quantile in (Decimal("0.5"), Decimal("0.99")):
        rank = max(int((quantile * int(count)).to_integral_value(rounding=ROUND_CEILING)), 1)
        cur.execute(
            f"SELECT predict_time_ms FROM billed_usage WHERE {where} "  # noqa: S608 -- constant
            "ORDER BY predict_time_ms LIMIT 1 OFFSET ?",
            (*params, rank - 1),
        )
        found.append(int(cur.fetchone()[0]))
    return found[0], found[1]


def _top_customers(cur: Cursor, period: Period) -> list[Customer]:
    cur.execute(
        "SELECT stripe_customer, price_per_second, COUNT(*), COALESCE(SUM(predict_time_ms), 0) "
        "FROM billed_usage WHERE stripe_customer IS NOT NULL AND created_at >= ? AND created_at < ? "
        "GROUP BY stripe_customer, price_per_second",
        (period.since, period.until),
    )
    totals: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for customer, price, count, ms in cur.fetchall():
        totals[customer][0] += int(count)
        totals[customer][1] += amount_for(Decimal(price), int(ms))
    ranked = sorted(totals.items(), key=lambda item: (-item[1][1], -item[1][0], item[0]))
    return [Customer(customer, int(count), revenue) for customer, (count, revenue) in ranked[:TOP_CUSTOMERS]]


def _paid_in(cur: Cursor, period: Period) -> dict[str, int]:
    """Per author: transfers sent in the period, less reversals sent in it."""
    paid: dict[str, int] = defaultdict(int)
    cur.execute(
        "SELECT author, COALESCE(SUM(cents), 0) FROM payouts WHERE transfer_id IS NOT NULL "
        "AND delivered_at >= ? AND delivered_at < ? GROUP BY author",
        (period.since, period.until),
    )
    for author, cents in cur.fetchall():
        paid[author] += int(cents)
    cur.execute(
        "SELECT author, COALESCE(SUM(cents), 0) FROM payout_reversals WHERE reversal_id IS NOT NULL "
        "AND delivered_at >= ? AND delivered_at < ? GROUP BY author",
        (period.since, period.until),
    )
    for author, cents in cur.fetchall():
        paid[author] -= int(cents)
    return dict(paid)
