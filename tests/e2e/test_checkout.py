"""A visitor buys an API key in a real Chromium: "Get an API key" on a model page, the test
Stripe's hosted checkout page, the welcome page that shows the key once; the key then runs a
prediction on the real inference server, billed to the new customer."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import stripe
from playwright.sync_api import Page, expect

from build import Identity, build
from devtools.teststripe.server import State
from devtools.teststripe.server import create_app as create_stripe
from proxy import Secrets
from proxy.app import create_app as create_proxy
from proxy.config import BillingConfig, load_config
from proxy.site import checkout_origin, security_headers
from tests.support.billing import EVENTS, KEY, MODEL, make_catalog, open_shop, wait_until
from tests.support.images import heldout_digit
from tests.support.inference import TOKEN
from tests.support.servers import bound_socket, serve, url_of


@dataclasses.dataclass(frozen=True)
class PaidStack:
    url: str  # the proxy
    stripe_url: str
    stripe: State


@pytest.fixture
def paid_stack(upstream: str, tmp_path: Path) -> Iterator[PaidStack]:
    """The built site and the proxy in front of the real inference server, billing through the
    test Stripe: a webhook endpoint registered there and the catalog synced, as an owner does."""
    app = create_stripe(seed=5)
    with serve(app) as stripe_url:
        sdk = stripe.StripeClient(
            "sk_test_owner", base_addresses={"api": stripe_url}, http_client=stripe.RequestsClient()
        )
        sock = bound_socket()  # the proxy's address, known before it starts: Checkout returns there
        proxy_url = url_of(sock)
        endpoint = sdk.v1.webhook_endpoints.create(
            {"url": f"{proxy_url}/stripe/webhook", "enabled_events": EVENTS}
        )
        # Playwright's sync API holds this thread's event loop: asyncio.run goes to another thread.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(make_catalog, stripe_url).result()
        config = load_config(environ={"INFERENCE_TOKEN": TOKEN})
        build(tmp_path / "dist", identity=Identity(config.owner, proxy_url))
        config = dataclasses.replace(
            config,
            upstream_url=upstream,
            public_origin=proxy_url,
            site_dir=tmp_path / "dist",
            ledger_path=tmp_path / "ledger.sqlite3",
            billing=BillingConfig(
                stripe_api_base=stripe_url, stripe_meter_events_base=stripe_url, poll_interval_s=0.05
            ),
            secrets=Secrets(
                inference_token=TOKEN,
                stripe_secret_key="sk_test_proxy",
                stripe_webhook_secret=str(endpoint.secret),
            ),
        )
        with serve(create_proxy(config), sock=sock) as url:
            yield PaidStack(url, stripe_url, app.state.stripe)


@pytest.mark.e2e
def test_a_visitor_pays_on_the_checkout_page_sees_the_key_once_and_it_bills_them(
    page: Page, paid_stack: PaidStack
) -> None:
    page.goto(f"{paid_stack.url}/models/digits/")
    page.get_by_role("button", name="Get an API key").click()

    expect(page.get_by_text("TEST STRIPE — no real payment")).to_be_visible()
    expect(page.get_by_test_id("line-item")).to_contain_text("metered")
    page.get_by_role("button", name="Pay (test)").click()

    expect(page.get_by_role("heading", name="Your API key")).to_be_visible()
    assert page.url.startswith(f"{paid_stack.url}/billing/welcome?session_id=cs_")
    key = page.get_by_test_id("api-key").inner_text()
    assert KEY.fullmatch(key)
    (session,) = paid_stack.stripe.of("checkout.session")
    assert session["status"] == "complete" and session["metadata"]["modelfolio_model"] == MODEL
    customer = session["customer"]

    image, label = heldout_digit()
    data_url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
    prediction = httpx.post(
        f"{paid_stack.url}/v1/models/{MODEL}/predictions",
        json={"input": {"image": data_url}},
        headers={"Authorization": f"Bearer {key}", "Prefer": "wait"},
        timeout=60,
    ).json()
    assert prediction["status"] == "succeeded" and prediction["output"]["label"] == label
    assert prediction["billing"]["billed_to"] == "customer"
    wait_until(
        lambda: any(e["identifier"] == prediction["id"] for e in paid_stack.stripe.events), "the meter event"
    )
    (event,) = [e for e in paid_stack.stripe.events if e["identifier"] == prediction["id"]]
    assert event["payload"]["stripe_customer_id"] == customer

    page.reload()
    expect(page.get_by_role("heading", name="Key already shown")).to_be_visible()
    expect(page.get_by_test_id("api-key")).to_have_count(0)
    assert key not in page.content()


def test_the_model_page_lets_its_form_go_only_to_the_configured_checkout(paid_stack: PaidStack) -> None:
    policy = httpx.get(f"{paid_stack.url}/models/digits/").headers["content-security-policy"]
    assert f"form-action 'self' {paid_stack.stripe_url};" in policy


def test_the_test_stripes_checkout_page_pays_as_the_test_only_call_does(tmp_path: Path) -> None:
    with open_shop(tmp_path) as shop:
        started, session_id = shop.start_checkout()
        shown = httpx.get(started.headers["location"])
        assert shown.status_code == 200 and "TEST STRIPE — no real payment" in shown.text
        assert "Pay (test)" in shown.text and "metered" in shown.text

        paid = httpx.post(started.headers["location"])
        assert paid.status_code == 303
        assert paid.headers["location"].endswith(f"/billing/welcome?session_id={session_id}")
        assert [(d["type"], d["status"]) for d in shop.stripe.webhooks.deliveries] == [
            ("customer.subscription.created", 200),
            ("checkout.session.completed", 200),
        ]
        assert shop.stripe.objects[session_id]["status"] == "complete"
        assert httpx.post(started.headers["location"]).status_code == 400  # paid once only


def test_with_real_stripe_the_checkout_origin_is_stripes_hosted_checkout() -> None:
    assert checkout_origin(BillingConfig()) == "https://checkout.stripe.com"
    assert (
        checkout_origin(BillingConfig(stripe_api_base="http://127.0.0.1:12111")) == "http://127.0.0.1:12111"
    )
    assert "form-action 'self';" in security_headers()["content-security-policy"]
