"""`python -m proxy billing reconcile`: the ledger's delivered milliseconds per customer and
meter against Stripe's meter event summaries over the same window; every difference printed.

Stripe sums events by their `timestamp` (the usage row's time) in [start, end) on whole minutes
(https://docs.stripe.com/api/billing/meter-event-summary/list), so the window is widened to whole
minutes and the ledger is read over exactly that window.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal

import stripe
from anyio import to_thread

from proxy.ledger import Ledger


@dataclass(frozen=True)
class Difference:
    customer: str
    event_name: str
    ledger_ms: int
    stripe_ms: Decimal | None  # None: no active meter with that event name at Stripe

    def __str__(self) -> str:
        stripe_side = "no meter" if self.stripe_ms is None else str(self.stripe_ms)
        return (
            f"DIFFERENCE {self.customer} {self.event_name}: ledger {self.ledger_ms} ms, "
            f"Stripe {stripe_side} ms"
        )


def window(since: datetime.datetime, until: datetime.datetime) -> tuple[int, int]:
    start = int(since.timestamp()) // 60 * 60
    end = -(-int(until.timestamp()) // 60) * 60
    return start, max(end, start + 60)


def _iso(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="microseconds")


async def reconcile(
    client: stripe.StripeClient,
    ledger: Ledger,
    since: datetime.datetime,
    until: datetime.datetime,
    customers: set[str] | None = None,
) -> tuple[list[Difference], int]:
    """Returns the differences and the number of (customer, meter) pairs compared. Stripe can
    only be asked per customer: the customers are the ledger's, plus any named in `customers`."""
    start, end = window(since, until)
    ours = await to_thread.run_sync(ledger.delivered_meter_totals, _iso(start), _iso(end))
    meters = {}
    async for meter in (
        await client.v1.billing.meters.list_async({"status": "active", "limit": 100})
    ).auto_paging_iter():
        meters[meter.event_name] = meter.id
    known = {customer for customer, _ in ours} | (customers or set())
    pairs = set(ours) | {(customer, name) for customer in known for name in meters}
    differences = []
    for customer, event_name in sorted(pairs):
        ledger_ms = ours.get((customer, event_name), 0)
        meter_id = meters.get(event_name)
        if meter_id is None:
            differences.append(Difference(customer, event_name, ledger_ms, None))
            continue
        summaries = await client.v1.billing.meters.event_summaries.list_async(
            meter_id, {"customer": customer, "start_time": start, "end_time": end}
        )
        stripe_ms = sum((Decimal(str(s.aggregated_value)) for s in summaries.data), Decimal(0))
        if stripe_ms != ledger_ms:
            differences.append(Difference(customer, event_name, ledger_ms, stripe_ms))
    return differences, len(pairs)
