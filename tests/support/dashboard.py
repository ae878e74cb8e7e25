"""A ledger with a few weeks of history, as the proxy leaves it, for the owner dashboard: two
models, paying customers and demo visitors, cache hits, an invoice paid and shared out to two
authors (one paid, one waiting), meter events still waiting and one dead letter."""

from __future__ import annotations

import datetime
import random
from decimal import Decimal

from proxy._payouts_config import AuthorShare
from proxy.billing.money import amount_for, exact, meter_event_name
from proxy.billing.payouts.outbox import TransferOutbox
from proxy.billing.payouts.store import PaidInvoice, PayoutLedger, UsageLine
from proxy.billing.store import Usage, UsageStore
from proxy.storage import Database

ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdef"  # 38 characters, as the config demands
DIGITS, DEFECTS = "modelfolio/digits", "modelfolio/defects"
PRICES = {DIGITS: "0.05", DEFECTS: "0.2"}
CUSTOMERS = ("cus_acme", "cus_globex", "cus_initech", "cus_umbrella")
SHARES = {DIGITS: AuthorShare("ada", Decimal("0.5")), DEFECTS: AuthorShare("bob", Decimal("0.3"))}


def usage(
    prediction_id: str,
    model: str,
    ms: int,
    at: datetime.datetime,
    customer: str | None,
    kind: str = "compute",
) -> Usage:
    price = PRICES[model]
    caller = f"customer:{customer}" if customer else "address:0f0f"
    amount = exact(amount_for(Decimal(price), ms))
    return Usage(prediction_id, caller, customer, model, "v1", ms, price, amount, at.isoformat(), kind)


def seed_history(database: Database, today: datetime.date, days: int = 14) -> dict[str, Decimal]:
    """Returns the exact revenue per model it wrote (customers only)."""
    store, ledger, outbox = UsageStore(database), PayoutLedger(database), TransferOutbox(database)
    rng = random.Random(5)
    revenue = {DIGITS: Decimal(0), DEFECTS: Decimal(0)}
    count = 0
    start = datetime.datetime.combine(today, datetime.time(9), datetime.UTC) - datetime.timedelta(
        days=days - 1
    )
    for day in range(days):
        for model, base in ((DIGITS, 40), (DEFECTS, 12)):
            for n in range(base + rng.randint(0, base) + day * 2):
                count += 1
                at = start + datetime.timedelta(days=day, seconds=n * 37)
                customer = None if n % 5 == 0 else CUSTOMERS[rng.randint(0, 3) if n % 3 else 0]
                kind = "cache_hit" if model == DIGITS and n % 7 == 0 else "compute"
                ms = (
                    rng.randint(1, 3)
                    if kind == "cache_hit"
                    else rng.randint(8, 40) * (4 if model == DEFECTS else 1)
                )
                row = usage(f"p{count:05d}", model, ms, at, customer, kind)
                store.record_usage(row, meter_event_name(model))
                if customer:
                    revenue[model] += Decimal(row.amount)
                    if day < days - 1:
                        store.mark_delivered([row.prediction_id], at.isoformat())
    dead = usage("p_dead", DIGITS, 20, start, CUSTOMERS[1])
    store.record_usage(dead, meter_event_name(DIGITS))
    store.dead_letter("p_dead", "Stripe refused it (400): timestamp out of range", start.isoformat())
    revenue[DIGITS] += Decimal(dead.amount)
    end = start + datetime.timedelta(days=days - 1)
    for customer in CUSTOMERS:
        lines = tuple(
            UsageLine(meter_event_name(m), start.isoformat(), end.isoformat(), None) for m in PRICES
        )
        invoice = PaidInvoice(f"in_{customer}", customer, "usd", f"ch_{customer}", 100_000, 0, lines)
        ledger.record_invoice((f"evt_{customer}", "invoice.paid"), invoice, SHARES, end.isoformat())
    ledger.add_author("ada", "ada@example.com", start.isoformat())
    ledger.set_account("ada", "acct_1AdaExample", start.isoformat())
    ledger.update_account(("evt_ada", "account.updated"), "acct_1AdaExample", True, True, start.isoformat())
    work = outbox.work("ada")
    assert work is not None
    for n, payout in enumerate(work.transfers):
        outbox.mark_sent(payout, f"tr_seed{n}", end.isoformat())
    return revenue
