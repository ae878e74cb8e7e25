"""Reconcile's money check: what the ledger billed on each (customer, meter) against what the
customer's subscription at Stripe charges for those milliseconds, its item's price on that meter.
Milliseconds agreeing with Stripe is not enough: a prediction billed at a price the subscription
does not charge (or on a meter no item charges) is money the ledger and /v1/usage show and Stripe
never invoices, or the other way round.

The comparison starts where the item took its current price (as the ledger saw it change): Stripe
invoices the usage before a price change at the old price (flexible billing mode), and the ledger
billed it so. Amounts are exact; cents are shown rounded once.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import stripe
from anyio import to_thread

from proxy.billing.money import exact, to_cents
from proxy.billing.store import Lane, UsageStore
from proxy.billing.stripe_api import retried
from proxy.billing.subscriptions import LIVE, OWING, SubscriptionStore


@dataclass(frozen=True)
class MoneyDifference:
    customer: str
    event_name: str
    ms: int
    billed: Decimal  # USD, what the ledger billed for these ms
    charged: Decimal | None  # USD, what the subscription's price charges for them; None: no item
    cents_per_ms: Decimal | None

    def __str__(self) -> str:
        billed = f"${to_cents(self.billed)} ({exact(self.billed)})"
        where = f"DIFFERENCE {self.customer} {self.event_name}: ledger billed {billed}"
        if self.charged is None:
            return f"{where} for {self.ms} ms, and no subscription item at Stripe charges this meter"
        charged = f"${to_cents(self.charged)} ({exact(self.charged)})"
        return f"{where} for {self.ms} ms, the subscription charges {charged} at {self.cents_per_ms} cents/ms"


async def check_money(
    client: stripe.StripeClient,
    usage: UsageStore,
    subscriptions: SubscriptionStore,
    lanes: list[Lane],
    since: str,
    until: str,
) -> list[MoneyDifference]:
    """One list call per customer (retried); `lanes` are the (customer, event name) pairs with
    delivered usage in [since, until)."""
    meters = await _meter_names(client)
    differences = []
    for customer in sorted({customer for customer, _ in lanes}):
        charging = await _items_at_stripe(client, customer, meters)
        mirrored = {
            name: (price_id, start)
            for _, name, price_id, _, start in await to_thread.run_sync(subscriptions.items, customer)
        }
        for lane in sorted(lane for lane in lanes if lane[0] == customer):
            event_name = lane[1]
            price = charging.get(event_name)
            start = since
            if price is not None and mirrored.get(event_name, ("", ""))[0] == price[1]:
                start = max(since, mirrored[event_name][1])
            billed_rows = await to_thread.run_sync(usage.billed_by_price, lane, start, until)
            ms = sum(row_ms for _, row_ms in billed_rows)
            billed = sum(
                (Decimal(per_second) * row_ms / 1000 for per_second, row_ms in billed_rows), Decimal(0)
            )
            if price is None:
                if ms:
                    differences.append(MoneyDifference(customer, event_name, ms, billed, None, None))
                continue
            charged = price[0] * ms / 100
            if charged != billed:
                differences.append(MoneyDifference(customer, event_name, ms, billed, charged, price[0]))
    return differences


async def _items_at_stripe(
    client: stripe.StripeClient, customer: str, meters: dict[str, str]
) -> dict[str, tuple[Decimal, str]]:
    """Event name -> (cents per ms, price id) of the item charging it, from the customer's
    subscriptions at Stripe: a live one's first, then one that owes, then the latest ended."""
    listed = await retried(
        client.v1.subscriptions.list_async, {"customer": customer, "status": "all", "limit": 100}
    )
    rank = {**dict.fromkeys(LIVE, 0), **dict.fromkeys(OWING, 1)}
    found: dict[str, tuple[tuple[int, int], Decimal, str]] = {}
    for subscription in listed.data:
        order = (rank.get(subscription.status, 2), -subscription.created)
        for item in subscription["items"].data:
            recurring = item.price.recurring
            if recurring is None or recurring.usage_type != "metered" or recurring.meter not in meters:
                continue
            name = meters[recurring.meter]
            if name not in found or order < found[name][0]:
                found[name] = (order, Decimal(str(item.price.unit_amount_decimal)), item.price.id)
    return {name: (cents, price_id) for name, (_, cents, price_id) in found.items()}


async def _meter_names(client: stripe.StripeClient) -> dict[str, str]:
    """Meter id -> event name, every meter (an ended meter still names old usage)."""
    names = {}
    listed = await retried(client.v1.billing.meters.list_async, {"limit": 100})
    while True:
        names.update({meter.id: meter.event_name for meter in listed.data})
        if not listed.has_more:
            return names
        listed = await retried(
            client.v1.billing.meters.list_async, {"limit": 100, "starting_after": listed.data[-1].id}
        )
