"""`python -m proxy billing reconcile`: the ledger's delivered milliseconds per customer and
meter against Stripe's meter event summaries over the same window; every difference printed.
(The money, and the dead letters, are checked by reconcile_money.py and dead_letters.py.)

Stripe sums events by their `timestamp` (the usage row's time) in [start, end) on whole minutes
(https://docs.stripe.com/api/billing/meter-event-summary/list), so the window is widened to whole
minutes and the ledger is read over exactly that window. A window ending now has events in
flight: some waiting in the outbox that Stripe may have already (an answer lost on the way), and
some delivered that Stripe has not summed yet (it aggregates asynchronously). A lane whose gap
those explain is noted as in flight, not reported as a difference. Each call to Stripe is retried
on 429, 5xx and lost connections, so one refused call does not abort the run.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal

import stripe
from anyio import to_thread

from proxy.billing.store import UsageStore
from proxy.billing.stripe_api import retried

SETTLE = datetime.timedelta(minutes=10)  # how long Stripe may take to sum an event it accepted


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


async def active_meters(client: stripe.StripeClient) -> dict[str, str]:
    """Event name -> meter id of every active meter."""
    meters = {}
    listed = await retried(client.v1.billing.meters.list_async, {"status": "active", "limit": 100})
    while True:
        meters.update({meter.event_name: meter.id for meter in listed.data})
        if not listed.has_more:
            return meters
        after = {"status": "active", "limit": 100, "starting_after": listed.data[-1].id}
        listed = await retried(client.v1.billing.meters.list_async, after)


async def reconcile(
    client: stripe.StripeClient,
    store: UsageStore,
    since: datetime.datetime,
    until: datetime.datetime,
    customers: set[str] | None = None,
    *,
    notes: list[str] | None = None,
    now: datetime.datetime | None = None,
) -> tuple[list[Difference], int]:
    """Returns the differences and the number of (customer, meter) pairs compared, and appends
    to `notes` a line per pair still in flight. Stripe can only be asked per customer: the
    customers are the ledger's, plus any named in `customers`."""
    start, end = window(since, until)
    ours = await to_thread.run_sync(store.delivered_meter_totals, _iso(start), _iso(end))
    settled = ((now or datetime.datetime.now(datetime.UTC)) - SETTLE).isoformat(timespec="microseconds")
    moving = await to_thread.run_sync(store.in_flight, _iso(start), _iso(end), settled)
    meters = await active_meters(client)
    known = {customer for customer, _ in ours} | {customer for customer, _ in moving} | (customers or set())
    pairs = set(ours) | {(customer, name) for customer in known for name in meters}
    differences = []
    for customer, event_name in sorted(pairs):
        ledger_ms = ours.get((customer, event_name), 0)
        meter_id = meters.get(event_name)
        if meter_id is None:
            differences.append(Difference(customer, event_name, ledger_ms, None))
            continue
        summaries = await retried(
            client.v1.billing.meters.event_summaries.list_async,
            meter_id,
            {"customer": customer, "start_time": start, "end_time": end},
        )
        stripe_ms = sum((Decimal(str(s.aggregated_value)) for s in summaries.data), Decimal(0))
        if stripe_ms == ledger_ms:
            continue
        pending, recent = moving.get((customer, event_name), (0, 0))
        if ledger_ms - recent <= stripe_ms <= ledger_ms + pending:
            if notes is not None:
                notes.append(
                    f"IN FLIGHT {customer} {event_name}: ledger {ledger_ms} ms delivered ({recent} ms of it "
                    f"in the last {SETTLE.seconds // 60} min), {pending} ms waiting; Stripe {stripe_ms} ms"
                )
            continue
        differences.append(Difference(customer, event_name, ledger_ms, stripe_ms))
    return differences, len(pairs)
