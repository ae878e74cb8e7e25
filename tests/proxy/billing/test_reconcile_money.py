"""Reconcile compares money, not only milliseconds: what the ledger billed against what the
customer's subscription item at Stripe charges for those milliseconds."""

from __future__ import annotations

import asyncio
import datetime
from decimal import Decimal
from pathlib import Path

import stripe

from devtools.teststripe.server import State
from proxy.billing import stripe_api
from proxy.billing.money import meter_event_name
from proxy.billing.reconcile_money import MoneyDifference, check_money
from proxy.billing.store import Usage
from proxy.billing.subscriptions import parse
from proxy.config import BillingConfig
from tests.support.billing import MODELS, Stores, catalog, now, open_stores, subscribe

EVENT_NAME = meter_event_name(MODELS[0])


def billed(
    stores: Stores, prediction_id: str, customer: str, ms: int, per_second: str, at: datetime.datetime
) -> None:
    amount = Decimal(per_second) * ms / 1000
    usage = Usage(
        prediction_id,
        f"customer:{customer}",
        customer,
        MODELS[0],
        None,
        ms,
        per_second,
        str(amount),
        at.isoformat(),
    )
    stores.usage.record_usage(usage, EVENT_NAME)
    stores.usage.mark_delivered([prediction_id], at.isoformat())


def money(stores: Stores, url: str) -> list[MoneyDifference]:
    async def run() -> list[MoneyDifference]:
        connection = stripe_api.connect(
            "sk_test_r", BillingConfig(stripe_api_base=url, stripe_meter_events_base=url)
        )
        since, until = (
            (now() - datetime.timedelta(days=1)).isoformat(),
            (now() + datetime.timedelta(minutes=1)).isoformat(),
        )
        lanes = sorted(stores.usage.delivered_meter_totals(since, until))
        try:
            return await check_money(
                connection.client, stores.usage, stores.subscriptions, lanes, since, until
            )
        finally:
            await connection.aclose()

    return asyncio.run(run())


def test_a_prediction_billed_at_a_price_the_subscription_does_not_charge_is_a_difference(
    stripe_server: tuple[State, str], tmp_path: Path
) -> None:
    _state, url = stripe_server
    _meters, (alice, bob) = catalog(url, customers=2)  # the price: 0.00005 cents/ms ($0.0005/s)
    with open_stores(f"sqlite:///{tmp_path / 'ledger.sqlite3'}") as stores:
        for customer in (alice, bob):
            subscribe(url, stores, customer, (MODELS[0],))
        billed(stores, "pred_right", alice, 1000, "0.0005", now())
        billed(stores, "pred_drifted", bob, 1000, "0.002", now())  # the model server's new price
        differences = money(stores, url)
    (difference,) = differences
    assert (difference.customer, difference.billed, difference.charged) == (
        bob,
        Decimal("0.002"),
        Decimal("0.0005"),
    )
    assert str(difference).startswith(
        f"DIFFERENCE {bob} {EVENT_NAME}: ledger billed $0.00 (0.002) for 1000 ms"
    )


def test_usage_on_a_meter_no_subscription_item_charges_is_a_difference(
    stripe_server: tuple[State, str], tmp_path: Path
) -> None:
    _state, url = stripe_server
    _meters, (alice,) = catalog(url, customers=1)
    with open_stores(f"sqlite:///{tmp_path / 'ledger.sqlite3'}") as stores:
        billed(stores, "pred_1", alice, 400, "0.0005", now())
        (difference,) = money(stores, url)
    assert difference.charged is None and "no subscription item at Stripe charges this meter" in str(
        difference
    )


def test_usage_before_a_price_change_is_held_to_the_old_price(
    stripe_server: tuple[State, str], tmp_path: Path
) -> None:
    _state, url = stripe_server
    _meters, (alice,) = catalog(url, customers=1)
    client = stripe.StripeClient(
        "sk_test_x", base_addresses={"api": url}, http_client=stripe.RequestsClient()
    )
    with open_stores(f"sqlite:///{tmp_path / 'ledger.sqlite3'}") as stores:
        subscription = subscribe(url, stores, alice, (MODELS[0],))
        billed(stores, "pred_old", alice, 1000, "0.0005", now() - datetime.timedelta(hours=2))
        dearer = client.v1.prices.create(
            {
                "currency": "usd",
                "unit_amount_decimal": "0.0002",
                "product_data": {"name": "dearer"},
                "recurring": {"interval": "month", "usage_type": "metered", "meter": _meters[EVENT_NAME]},
                "metadata": {"modelfolio_event_name": EVENT_NAME},
            }
        )
        item = client.v1.subscriptions.retrieve(subscription)["items"].data[0]
        moved = client.v1.subscription_items.update(item.id, {"price": dearer.id})
        state = client.v1.subscriptions.retrieve(moved.subscription)
        stores.subscriptions.record(
            parse(state.to_dict(), int(now().timestamp()), {}),
            (now() - datetime.timedelta(hours=1)).isoformat(),
        )
        billed(stores, "pred_new", alice, 1000, "0.002", now())
        assert money(stores, url) == []
        billed(stores, "pred_stale", alice, 10, "0.0005", now())  # billed at the old price after the move
        (difference,) = money(stores, url)
    assert difference.ms == 1010 and difference.charged == Decimal("0.00202")
