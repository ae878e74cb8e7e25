"""The test Stripe's subscriptions answer the real `stripe` SDK as Stripe would: one item per
price, listed by customer, items added and repriced, statuses that change with payments, a
delayed checkout payment, and the events each of these sends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe

from devtools.teststripe.server import State, create_app
from tests.support.servers import serve


@pytest.fixture
def server() -> Iterator[tuple[State, str]]:
    app = create_app(seed=4)
    with serve(app) as url:
        yield app.state.stripe, url


def sdk(url: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_sub", base_addresses={"api": url}, http_client=stripe.RequestsClient()
    )


def metered_price(client: stripe.StripeClient, name: str) -> str:
    meter = client.v1.billing.meters.create(
        {"display_name": name, "event_name": f"{name}_ms", "default_aggregation": {"formula": "sum"}}
    )
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount_decimal": "0.00005",
            "product_data": {"name": name},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            "metadata": {"modelfolio_event_name": f"{name}_ms"},
        }
    )
    return price.id


def events_of(state: State, kind: str) -> list[dict[str, Any]]:
    return [e for e in state.webhooks.events.values() if e["type"] == kind]


def test_a_subscription_has_one_item_per_price_and_lists_by_customer(server) -> None:
    state, url = server
    client = sdk(url)
    digits, cats = metered_price(client, "digits"), metered_price(client, "cats")
    alice = client.v1.customers.create({"name": "Alice"}).id
    made = client.v1.subscriptions.create(
        {
            "customer": alice,
            "items": [{"price": digits}, {"price": cats}],
            "billing_mode": {"type": "flexible"},
        }
    )
    assert made.status == "active" and made.billing_mode.type == "flexible"
    assert [item.price.id for item in made["items"].data] == [digits, cats]
    assert made["items"].data[0].price.metadata["modelfolio_event_name"] == "digits_ms"
    assert [s.id for s in client.v1.subscriptions.list({"customer": alice}).data] == [made.id]
    client.v1.subscriptions.cancel(made.id)
    assert client.v1.subscriptions.list({"customer": alice}).data == []  # canceled: left out
    assert [s.status for s in client.v1.subscriptions.list({"customer": alice, "status": "all"}).data] == [
        "canceled"
    ]
    assert [e["data"]["object"]["id"] for e in events_of(state, "customer.subscription.created")] == [made.id]


def test_an_item_added_or_repriced_sends_an_update_and_a_price_goes_on_once(server) -> None:
    state, url = server
    client = sdk(url)
    digits, cats, dearer = (metered_price(client, name) for name in ("digits", "cats", "dearer"))
    alice = client.v1.customers.create({}).id
    subscription = client.v1.subscriptions.create({"customer": alice, "items": [{"price": digits}]})
    added = client.v1.subscription_items.create({"subscription": subscription.id, "price": cats})
    with pytest.raises(stripe.InvalidRequestError, match="already on subscription"):
        client.v1.subscription_items.create({"subscription": subscription.id, "price": cats})
    client.v1.subscription_items.update(added.id, {"price": dearer})
    now = client.v1.subscriptions.retrieve(subscription.id)
    assert [item.price.id for item in now["items"].data] == [digits, dearer]
    updates = events_of(state, "customer.subscription.updated")
    assert len(updates) == 2
    assert [i["price"]["id"] for i in updates[-1]["data"]["previous_attributes"]["items"]["data"]] == [
        digits,
        cats,
    ]


def test_a_failed_payment_makes_a_subscription_past_due_then_active_again(server) -> None:
    state, url = server
    client = sdk(url)
    alice = client.v1.customers.create({}).id
    subscription = client.v1.subscriptions.create(
        {"customer": alice, "items": [{"price": metered_price(client, "d")}]}
    )
    for status in ("past_due", "unpaid", "active"):
        answer = httpx.post(f"{url}/_test/subscriptions/{subscription.id}/status", json={"status": status})
        assert answer.json()["subscription"]["status"] == status
    updates = events_of(state, "customer.subscription.updated")
    assert [u["data"]["previous_attributes"]["status"] for u in updates] == ["active", "past_due", "unpaid"]
    refused = httpx.post(f"{url}/_test/subscriptions/{subscription.id}/status", json={"status": "gone"})
    assert refused.status_code == 400


def test_a_delayed_checkout_payment_completes_unpaid_then_succeeds(server) -> None:
    state, url = server
    client = sdk(url)
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "line_items": [{"price": metered_price(client, "d")}],
            "success_url": "http://127.0.0.1:9/ok",
            "subscription_data": {"metadata": {"modelfolio": "1"}},
        }
    )
    done = httpx.post(
        f"{url}/_test/checkout/sessions/{session.id}/complete", json={"payment": "delayed"}
    ).json()
    assert done["session"]["payment_status"] == "unpaid"
    subscription = client.v1.subscriptions.retrieve(done["session"]["subscription"])
    assert subscription.status == "incomplete" and subscription.metadata["modelfolio"] == "1"
    httpx.post(f"{url}/_test/checkout/sessions/{session.id}/async_payment", json={"outcome": "succeeded"})
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    (paid,) = events_of(state, "checkout.session.async_payment_succeeded")
    assert paid["data"]["object"]["payment_status"] == "paid"


def test_an_error_report_samples_five_errors_a_code_and_gives_the_true_count(server) -> None:
    state, url = server
    client = sdk(url)
    metered_price(client, "digits")
    for i in range(7):
        client.v1.billing.meter_events.create(
            {
                "event_name": "digits_ms",
                "identifier": f"p{i}",
                "payload": {"stripe_customer_id": "cus_no", "value": "1"},
            }
        )
    client.v1.billing.meter_events.create(
        {
            "event_name": "nothing_ms",
            "identifier": "q",
            "payload": {"stripe_customer_id": "cus_no", "value": "1"},
        }
    )
    queued = httpx.post(f"{url}/_test/billing/meter_error_report").json()["events"]
    full = [state.webhooks.full_events[event_id] for event_id in queued]
    assert [event["type"] for event in full] == [
        "v1.billing.meter.error_report_triggered",
        "v1.billing.meter.no_meter_found",
    ]
    (customers,) = full[0]["data"]["reason"]["error_types"]
    assert customers["error_count"] == 7 and len(customers["sample_errors"]) == 5
    (no_meter,) = full[1]["data"]["reason"]["error_types"]
    assert no_meter["code"] == "no_meter" and no_meter["sample_errors"][0]["request"]["identifier"] == "q"
