"""The test Stripe answers Connect and invoicing as Stripe does, for the real `stripe` SDK:
Express accounts onboarded through single-use Account Links, transfers drawn on a charge,
reversals, invoices for a period's metered usage paid by a charge (or carried below Stripe's
minimum), refunds, and the signed webhooks of each, Connect events to Connect endpoints only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from devtools.teststripe.server import create_app
from tests.support.payouts import charge_of, express_author, invoice_period, sdk
from tests.support.servers import serve

NOW = 1_800_000_000


@pytest.fixture
def clock() -> list[float]:
    return [float(NOW)]


@pytest.fixture
def server(clock: list[float]) -> Iterator[tuple[Any, str]]:
    app = create_app(seed=7, clock=lambda: clock[0])
    with serve(app) as url:
        yield app.state.stripe, url


@pytest.fixture
def received() -> Iterator[tuple[list[tuple[str, dict[str, Any]]], str]]:
    """A webhook receiver on loopback: (path, event) of each delivery."""
    seen: list[tuple[str, dict[str, Any]]] = []

    async def hook(request: Request) -> JSONResponse:
        seen.append((request.url.path, json.loads(await request.body())))
        return JSONResponse({"ok": True})

    with serve(Starlette(routes=[Route("/{kind}", hook, methods=["POST"])])) as url:
        yield seen, url


def metered(client: stripe.StripeClient, cents_per_ms: str, name: str = "digits_ms") -> str:
    meter = client.v1.billing.meters.create(
        {"display_name": name, "event_name": name, "default_aggregation": {"formula": "sum"}}
    )
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount_decimal": cents_per_ms,  # type: ignore[typeddict-item]
            "product_data": {"name": name},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    return price.id


def usage(
    client: stripe.StripeClient, customer: str, ms: int, identifier: str, name: str = "digits_ms"
) -> None:
    client.v1.billing.meter_events.create(
        {
            "event_name": name,
            "payload": {"stripe_customer_id": customer, "value": str(ms)},
            "identifier": identifier,
            "timestamp": NOW - 60,
        }
    )


def test_an_express_account_is_onboarded_once_through_its_link_and_tells_connect_endpoints(
    server: tuple[Any, str], received: tuple[list[tuple[str, dict[str, Any]]], str], clock: list[float]
) -> None:
    state, url = server
    seen, hooks = received
    client = sdk(url)
    client.v1.webhook_endpoints.create({"url": f"{hooks}/platform", "enabled_events": ["*"]})
    connect = client.v1.webhook_endpoints.create(
        {"url": f"{hooks}/connect", "enabled_events": ["account.updated"], "connect": True}
    )
    account = client.v1.accounts.create(
        {"type": "express", "email": "ada@example.com", "capabilities": {"transfers": {"requested": True}}}
    )
    assert (account.payouts_enabled, account.details_submitted, account.capabilities.transfers) == (
        False,
        False,
        "inactive",
    )
    link = client.v1.account_links.create(
        {
            "account": account.id,
            "type": "account_onboarding",
            "return_url": "https://x.test/done",
            "refresh_url": "https://x.test/again",
        }
    )
    assert link.expires_at - link.created == 300

    page = httpx.get(link.url)
    assert page.status_code == 200 and "Submit (test)" in page.text
    assert httpx.get(link.url).headers["location"] == "https://x.test/again"  # visited: single use
    done = httpx.post(link.url)

    assert done.headers["location"] == "https://x.test/done"
    after = client.v1.accounts.retrieve(account.id)
    assert (after.payouts_enabled, after.details_submitted, after.capabilities.transfers) == (
        True,
        True,
        "active",
    )
    assert [(path, event["type"], event.get("account")) for path, event in seen] == [
        ("/connect", "account.updated", account.id)
    ]
    signature = state.webhooks.deliveries[-1]
    assert signature["url"] == f"{hooks}/connect" and connect.secret.startswith("whsec_")
    expired = client.v1.account_links.create(
        {
            "account": account.id,
            "type": "account_onboarding",
            "return_url": "https://x.test/done",
            "refresh_url": "https://x.test/again",
        }
    )
    clock[0] += 301
    assert httpx.get(expired.url).headers["location"] == "https://x.test/again"
    with pytest.raises(stripe.InvalidRequestError, match="account_update"):
        client.v1.account_links.create(
            {
                "account": account.id,
                "type": "account_update",
                "return_url": "https://x.test/done",
                "refresh_url": "https://x.test/again",
            }
        )


def test_a_metered_invoice_is_paid_by_a_charge_found_through_its_payments(server: tuple[Any, str]) -> None:
    _state, url = server
    client = sdk(url)
    price = metered(client, "0.05")  # 5 cents a second
    customer = client.v1.customers.create({"email": "c@example.com"}).id
    subscription = client.v1.subscriptions.create({"customer": customer, "items": [{"price": price}]})
    usage(client, customer, 12_345, "p1")
    usage(client, customer, 10_000, "p2")

    invoice = invoice_period(url, subscription.id, _t(NOW - 3600), _t(NOW))["invoice"]

    assert invoice["status"] == "paid" and invoice["lines"]["data"][0]["quantity"] == 22_345
    assert invoice["amount_paid"] == 1117  # 22,345 ms x 0.05 cents = 1,117.25 -> 1,117 cents
    line = client.v1.invoices.line_items.list(invoice["id"]).data[0]
    assert line.pricing.price_details.price == price and line.period.end == NOW
    charge = charge_of(client, invoice["id"])
    assert (charge.amount, charge.amount_refunded, charge.status) == (1117, 0, "succeeded")


def test_an_invoice_below_the_minimum_charge_is_paid_by_the_next(server: tuple[Any, str]) -> None:
    state, url = server
    client = sdk(url)
    price = metered(client, "0.01")
    customer = client.v1.customers.create({}).id
    subscription = client.v1.subscriptions.create({"customer": customer, "items": [{"price": price}]})
    usage(client, customer, 3_000, "small")  # 30 cents

    small = invoice_period(url, subscription.id, _t(NOW - 3600), _t(NOW - 30))["invoice"]
    usage(client, customer, 5_000, "more")  # 50 cents, and the 30 owed
    state.events[-1]["timestamp"] = NOW - 20
    more = invoice_period(url, subscription.id, _t(NOW - 30), _t(NOW))["invoice"]

    assert (small["status"], small["amount_paid"], small["ending_balance"]) == ("paid", 0, 30)
    assert client.v1.invoice_payments.list({"invoice": small["id"]}).data == []
    assert (more["starting_balance"], more["amount_paid"]) == (30, 80)


def test_transfers_draw_on_their_source_charge_and_reverse_to_the_cent(server: tuple[Any, str]) -> None:
    _state, url = server
    client = sdk(url)
    price = metered(client, "0.1")
    customer = client.v1.customers.create({}).id
    subscription = client.v1.subscriptions.create({"customer": customer, "items": [{"price": price}]})
    usage(client, customer, 10_000, "p")  # $10
    invoice = invoice_period(url, subscription.id, _t(NOW - 3600), _t(NOW))["invoice"]
    charge = charge_of(client, invoice["id"])
    ready, waiting = express_author(client, url), express_author(client, url, onboarded=False)

    def transfer(amount: int, destination: str = ready, key: str | None = None) -> Any:
        params: Any = {
            "amount": amount,
            "currency": "usd",
            "destination": destination,
            "source_transaction": charge.id,
            "transfer_group": invoice["id"],
        }
        return client.v1.transfers.create(params, options={"idempotency_key": key} if key else {})

    with pytest.raises(stripe.InvalidRequestError) as refused:
        transfer(100, waiting)
    assert refused.value.code == "insufficient_capabilities_for_transfer"
    first = transfer(600, key="k1")
    assert transfer(600, key="k1").id == first.id  # a retry with its key gets the same transfer
    with pytest.raises(stripe.InvalidRequestError, match="exceeds what remains"):
        transfer(401)
    second = transfer(400)
    assert [t.id for t in client.v1.transfers.list({"transfer_group": invoice["id"]}).data] == [
        second.id,
        first.id,
    ]

    client.v1.transfers.reversals.create(first.id, {"amount": 100})
    with pytest.raises(stripe.InvalidRequestError, match="greater than the amount that can be reversed"):
        client.v1.transfers.reversals.create(first.id, {"amount": 501})
    client.v1.transfers.reversals.create(first.id)  # the rest
    after = client.v1.transfers.retrieve(first.id)
    assert (after.amount_reversed, after.reversed) == (600, True)
    assert [r.amount for r in client.v1.transfers.reversals.list(first.id).data] == [500, 100]


def test_a_refund_returns_part_of_a_charge_and_says_so_in_charge_refunded(
    server: tuple[Any, str], received: tuple[list[tuple[str, dict[str, Any]]], str]
) -> None:
    _state, url = server
    seen, hooks = received
    client = sdk(url)
    client.v1.webhook_endpoints.create({"url": f"{hooks}/platform", "enabled_events": ["charge.refunded"]})
    price = metered(client, "0.1")
    customer = client.v1.customers.create({}).id
    subscription = client.v1.subscriptions.create({"customer": customer, "items": [{"price": price}]})
    usage(client, customer, 10_000, "p")
    charge = charge_of(client, invoice_period(url, subscription.id, _t(NOW - 3600), _t(NOW))["invoice"]["id"])

    client.v1.refunds.create({"charge": charge.id, "amount": 250})
    httpx.post(f"{url}/_test/faults", json={})  # any API call delivers what is pending
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        client.v1.refunds.create({"charge": charge.id, "amount": 751})

    assert too_much.value.code == "amount_too_large"
    assert client.v1.charges.retrieve(charge.id).amount_refunded == 250
    assert [(e["type"], e["data"]["object"]["amount_refunded"]) for _, e in seen] == [
        ("charge.refunded", 250)
    ]


def _t(unix: int) -> Any:
    import datetime

    return datetime.datetime.fromtimestamp(unix, datetime.UTC)
