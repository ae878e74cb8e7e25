"""The dashboard's figures, on SQLite and PostgreSQL: predictions and revenue per model and day,
exact to the cent of what the ledger billed; nearest-rank p50/p99; cache hit rate; the top
customers; what authors were paid in the period and what waits; the outboxes."""

from __future__ import annotations

import datetime
from decimal import Decimal

from proxy.billing.money import meter_event_name
from proxy.billing.store import UsageStore
from proxy.dashboard.figures import Period, read_figures
from proxy.storage import Database
from tests.support.dashboard import DEFECTS, DIGITS, seed_history, usage

TODAY = datetime.date(2026, 3, 20)


def test_revenue_per_model_is_exactly_what_the_ledger_billed_customers(any_database: Database) -> None:
    revenue = seed_history(any_database, TODAY)

    figures = read_figures(any_database, Period(TODAY - datetime.timedelta(days=29), TODAY))

    by_model = {m.model: m for m in figures.models}
    assert {model: by_model[model].revenue for model in (DIGITS, DEFECTS)} == revenue
    assert figures.totals["revenue"] == sum(revenue.values())
    assert sum(sum(days.values()) for days in figures.revenue_by_day.values()) == figures.totals["revenue"]
    assert sum(m.predictions for m in figures.models) == figures.totals["predictions"]
    assert by_model[DIGITS].cache_hits > 0 and by_model[DEFECTS].cache_hits == 0


def test_a_day_outside_the_period_is_not_counted(any_database: Database) -> None:
    store = UsageStore(any_database)
    inside = datetime.datetime(2026, 3, 10, 23, 59, 59, tzinfo=datetime.UTC)
    for n, at in enumerate((inside, inside + datetime.timedelta(seconds=1))):
        store.record_usage(usage(f"edge{n}", DIGITS, 1000, at, "cus_a"), meter_event_name(DIGITS))

    figures = read_figures(any_database, Period(datetime.date(2026, 3, 1), datetime.date(2026, 3, 10)))

    assert figures.predictions_by_day[DIGITS] == {"2026-03-10": 1}
    assert figures.revenue_by_day[DIGITS]["2026-03-10"] == Decimal("0.05")  # 1 s at $0.05/s


def test_p50_and_p99_are_nearest_rank_over_computed_predictions_only(any_database: Database) -> None:
    store = UsageStore(any_database)
    at = datetime.datetime(2026, 3, 5, 12, tzinfo=datetime.UTC)
    for ms in range(1, 201):  # 1..200 ms
        store.record_usage(usage(f"l{ms}", DEFECTS, ms, at, "cus_a"), meter_event_name(DEFECTS))
    store.record_usage(usage("hit", DEFECTS, 99999, at, "cus_a", "cache_hit"), meter_event_name(DEFECTS))

    (model,) = read_figures(any_database, Period(datetime.date(2026, 3, 5), datetime.date(2026, 3, 5))).models

    assert (model.p50_ms, model.p99_ms) == (100, 198)
    assert model.hit_rate == Decimal(1) / 201


def test_top_customers_authors_and_outboxes(any_database: Database) -> None:
    seed_history(any_database, TODAY)

    figures = read_figures(any_database, Period(TODAY - datetime.timedelta(days=29), TODAY))

    revenues = [c.revenue for c in figures.customers]
    assert revenues == sorted(revenues, reverse=True) and len(figures.customers) == 4
    authors = {a.balance.author: a for a in figures.authors}
    assert authors["ada"].paid_in_period_cents == authors["ada"].balance.transferred_cents > 0
    assert authors["ada"].balance.pending_cents == 0
    assert authors["bob"].paid_in_period_cents == 0 and authors["bob"].balance.pending_cents > 0
    assert figures.payouts.held_cents == authors["bob"].balance.pending_cents
    assert figures.meter_outbox.backlog > 0 and figures.meter_outbox.dead == 1
