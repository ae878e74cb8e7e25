"""Self-serve keys, as a buyer meets them: "Get an API key" on a model page, Stripe Checkout (the
test Stripe on loopback, driven by the real SDK), the signed webhook, and the key shown once."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from build import Identity, build
from tests.support.billing import KEY, MODEL, Shop, wait_until, welcome_path
from tests.support.proxy import FakeInference, bearer, predict, proxy_in_front_of


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
    assert [(d["type"], d["status"]) for d in completed["deliveries"]] == [
        ("customer.subscription.created", 200),
        ("checkout.session.completed", 200),
    ]
    customer = completed["session"]["customer"]
    with httpx.Client(base_url=shop.proxy.base_url) as other_browser:
        assert other_browser.get(welcome_path(session_id)).status_code == 403
    shown = shop.proxy.get(welcome_path(session_id))
    again = shop.proxy.get(welcome_path(session_id))
    (key,) = KEY.findall(shown.text)
    assert shown.status_code == 200 and shown.headers["cache-control"] == "no-store"
    assert again.status_code == 410 and "already shown" in again.text and not KEY.search(again.text)

    assert shop.resend(completed["deliveries"][1]["event"])[0]["status"] == 200  # Stripe retries
    with shop.stores() as stores:
        keys = [k for k in stores.ledger.api_keys() if k.customer == customer]
        assert (
            len(keys) == 1
            and keys[0].key_hash != key
            and key not in str(stores.stripe.checkout_key(session_id))
        )
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
