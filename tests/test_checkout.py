"""Self-serve keys, as a buyer meets them: "Get an API key" on a model page, Stripe Checkout (the
test Stripe on loopback, driven by the real SDK), the signed webhook, and the key shown once."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from build import Identity, build
from proxy import Secrets, stripe_api
from proxy.catalog import Product, sync
from proxy.config import BillingConfig
from proxy.ledger import Ledger
from tests.servers import serve
from tests.stripe_server import State
from tests.stripe_server import create_app as create_stripe
from tests.test_proxy_app import PRICE, TOKEN, FakeInference, bearer, predict, proxy_in_front_of

MODEL = "modelfolio/digits"
KEY = re.compile(r"mf_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
EVENTS = [
    "checkout.session.completed",
    "customer.subscription.deleted",
    "v1.billing.meter.error_report_triggered",
]


@dataclass
class Shop:
    stripe: State
    stripe_url: str
    sdk: stripe.StripeClient
    proxy: httpx.Client  # one browser: it keeps its cookies
    webhook_secret: str
    ledger_path: Path

    def ledger(self) -> contextlib.closing[Ledger]:
        return contextlib.closing(Ledger(self.ledger_path))

    def start_checkout(self, browser: httpx.Client | None = None) -> tuple[httpx.Response, str]:
        started = (browser or self.proxy).post("/billing/checkout", data={"model": MODEL})
        return started, started.headers.get("location", "").rsplit("/", 1)[-1]

    def complete(self, session_id: str) -> dict[str, Any]:
        return httpx.post(f"{self.stripe_url}/_test/checkout/sessions/{session_id}/complete").json()

    def resend(self, event_id: str) -> list[dict[str, Any]]:
        return httpx.post(f"{self.stripe_url}/_test/events/{event_id}/resend").json()["deliveries"]

    def buy(self) -> tuple[str, dict[str, Any]]:
        """The whole happy path; returns the key and the completed session."""
        _, session_id = self.start_checkout()
        session = self.complete(session_id)["session"]
        return KEY.findall(self.proxy.get(welcome_path(session_id)).text)[0], session


def welcome_path(session_id: str) -> str:
    return f"/billing/welcome?session_id={session_id}"


def make_catalog(url: str) -> None:
    async def run() -> None:
        connection = stripe_api.connect(
            "sk_test_owner", BillingConfig(stripe_api_base=url, stripe_meter_events_base=url)
        )
        try:
            await sync(connection.client, [Product(MODEL, Decimal(PRICE))])
        finally:
            await connection.aclose()

    asyncio.run(run())


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    with open_shop(tmp_path) as opened:
        yield opened


@contextlib.contextmanager
def open_shop(tmp_path: Path) -> Iterator[Shop]:
    """The test Stripe with a webhook endpoint and a priced model, and the proxy in front of a
    fake inference server, with the endpoint's secret."""
    app = create_stripe(seed=3)
    with serve(app) as stripe_url:
        sdk = stripe.StripeClient(
            "sk_test_owner", base_addresses={"api": stripe_url}, http_client=stripe.RequestsClient()
        )
        endpoint = sdk.v1.webhook_endpoints.create(
            {"url": "http://127.0.0.1:9/stripe/webhook", "enabled_events": EVENTS}
        )
        make_catalog(stripe_url)
        secrets = Secrets(
            inference_token=TOKEN, stripe_secret_key="sk_test_proxy", stripe_webhook_secret=endpoint.secret
        )
        billing = BillingConfig(
            stripe_api_base=stripe_url, stripe_meter_events_base=stripe_url, timeout_s=5, poll_interval_s=0.05
        )
        with proxy_in_front_of(FakeInference().app(), tmp_path, secrets=secrets, billing=billing) as client:
            sdk.v1.webhook_endpoints.update(
                endpoint.id, {"url": f"{str(client.base_url).rstrip('/')}/stripe/webhook"}
            )
            yield Shop(
                app.state.stripe, stripe_url, sdk, client, str(endpoint.secret), tmp_path / "ledger.sqlite3"
            )


def wait_until(condition: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_the_model_page_has_a_get_an_api_key_form_posting_to_the_proxy(tmp_path: Path) -> None:
    build(tmp_path / "dist", identity=Identity("modelfolio", "http://127.0.0.1:8000"))
    page = (tmp_path / "dist" / "models" / "digits" / "index.html").read_text()
    form = re.search(r'<form method="post" action="/billing/checkout"[^>]*>(.*?)</form>', page, re.DOTALL)
    assert form and 'name="model" value="modelfolio/digits"' in form.group(1)
    assert "Get an API key" in form.group(1) and "<script" not in form.group(1)


def test_without_stripe_the_button_says_billing_is_not_configured_and_the_demo_still_works(
    tmp_path: Path,
) -> None:
    with proxy_in_front_of(FakeInference().app(), tmp_path) as client:
        answer = client.post("/billing/checkout", data={"model": MODEL})
        demo = predict(client)
    assert answer.status_code == 503 and "billing is not configured on this portfolio" in answer.text.lower()
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert demo.status_code == 201 and demo.json()["billing"]["billed_to"] == "demo"


def test_completing_checkout_issues_one_working_key_billed_to_that_customer(shop: Shop) -> None:
    started, session_id = shop.start_checkout()
    assert started.status_code == 303 and started.headers["location"].startswith(shop.stripe_url)
    session = shop.stripe.objects[session_id]
    price = shop.stripe.objects[session["line_items_prices"][0]]
    assert session["mode"] == "subscription" and price["recurring"]["usage_type"] == "metered"
    assert session["success_url"].endswith("/billing/welcome?session_id={CHECKOUT_SESSION_ID}")
    assert shop.proxy.get(welcome_path(session_id)).status_code == 202  # not confirmed yet

    completed = shop.complete(session_id)
    assert [d["status"] for d in completed["deliveries"]] == [200]
    customer = completed["session"]["customer"]
    with httpx.Client(base_url=shop.proxy.base_url) as other_browser:
        assert other_browser.get(welcome_path(session_id)).status_code == 403
    shown = shop.proxy.get(welcome_path(session_id))
    again = shop.proxy.get(welcome_path(session_id))
    (key,) = KEY.findall(shown.text)
    assert shown.status_code == 200 and shown.headers["cache-control"] == "no-store"
    assert again.status_code == 410 and "already shown" in again.text and not KEY.search(again.text)

    assert shop.resend(completed["deliveries"][0]["event"])[0]["status"] == 200  # Stripe retries
    with shop.ledger() as ledger:
        keys = [k for k in ledger.api_keys() if k.customer == customer]
        assert len(keys) == 1 and keys[0].key_hash != key and key not in str(ledger.checkout_key(session_id))
    prediction = predict(shop.proxy, bearer(key)).json()
    assert prediction["billing"]["billed_to"] == "customer"
    wait_until(
        lambda: any(e["identifier"] == prediction["id"] for e in shop.stripe.events), "the meter event"
    )
    (event,) = [e for e in shop.stripe.events if e["identifier"] == prediction["id"]]
    assert event["payload"] == {"stripe_customer_id": customer, "value": "13"}


def test_when_the_subscription_is_deleted_the_key_gets_401(shop: Shop) -> None:
    key, session = shop.buy()
    assert predict(shop.proxy, bearer(key)).status_code == 201
    shop.sdk.v1.subscriptions.cancel(session["subscription"])
    assert [d["status"] for d in shop.stripe.webhooks.deliveries[-1:]] == [200]
    refused = predict(shop.proxy, bearer(key))
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]


def test_a_subscription_deleted_before_the_key_was_shown_never_shows_it(shop: Shop) -> None:
    _, session_id = shop.start_checkout()
    session = shop.complete(session_id)["session"]
    shop.sdk.v1.subscriptions.cancel(session["subscription"])
    ended = shop.proxy.get(welcome_path(session_id))
    assert ended.status_code == 410 and not KEY.search(ended.text)


def test_a_model_without_a_stripe_price_is_not_for_sale_yet(shop: Shop) -> None:
    answer = shop.proxy.post("/billing/checkout", data={"model": "modelfolio/unpriced"})
    assert answer.status_code == 503 and "sync-catalog" in answer.text
    assert shop.stripe.of("checkout.session") == []


def test_no_stripe_secret_reaches_a_page_or_a_log(shop: Shop, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="modelfolio.proxy")
    key, _ = shop.buy()
    for secret in (shop.webhook_secret, "sk_test_proxy", key):
        assert secret not in caplog.text
