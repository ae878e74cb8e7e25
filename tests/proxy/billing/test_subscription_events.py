"""A key works only while its subscription pays for what it calls, as a customer meets it: one
subscription with an item per model, a model the subscription has no price for refused with 402,
payments that fail and recover, a retried webhook that comes after the end, a delayed payment."""

from __future__ import annotations

import httpx

from tests.support.billing import KEY, MODEL, Shop, wait_until, welcome_path
from tests.support.proxy import IMAGE, PRICE, bearer, predict

CATS = "modelfolio/cats"


def predict_on(shop: Shop, model: str, key: str) -> httpx.Response:
    return shop.proxy.post(
        f"/v1/models/{model}/predictions", json={"input": IMAGE}, headers={**bearer(key), "Prefer": "wait"}
    )


def meters_charged(shop: Shop, subscription_id: str) -> set[str]:
    subscription = shop.stripe.objects[subscription_id]
    return {item["price"]["recurring"]["meter"] for item in subscription["items"]["data"]}


def test_a_key_is_refused_on_a_model_its_subscription_has_no_price_for(shop: Shop) -> None:
    key, session = shop.buy()
    refused = predict_on(shop, CATS, key)
    assert refused.status_code == 402
    assert CATS in refused.json()["detail"] and "sync-catalog" in refused.json()["detail"]
    assert len(shop.fake.seen) == 0 or all(CATS not in seen["path"] for seen in shop.fake.seen)
    with shop.stores() as stores:
        assert stores.usage.usage_of(f"customer:{session['customer']}") == []

    # The owner publishes cats: every subscription gets its price, and the key works on it.
    report = shop.publish({MODEL: PRICE, CATS: "0.002"})
    assert any(f"{session['subscription']} ({session['customer']}): added {CATS}" in line for line in report)
    cats_meter = next(
        m["id"] for m in shop.stripe.of("billing.meter") if m["event_name"].startswith("modelfolio_cats")
    )
    assert cats_meter in meters_charged(shop, session["subscription"])
    answered = predict_on(shop, CATS, key).json()
    assert answered["billing"] == {
        "amount": "0.000026",
        "currency": "usd",
        "billed_to": "customer",
    }  # 13 ms x $0.002
    wait_until(
        lambda: any(e["identifier"] == answered["id"] for e in shop.stripe.events), "the cats meter event"
    )


def test_checkout_subscribes_to_every_models_price_at_once(shop: Shop) -> None:
    shop.publish({MODEL: PRICE, CATS: "0.002"})
    key, session = shop.buy()
    assert len(shop.stripe.objects[session["subscription"]]["items"]["data"]) == 2
    assert shop.stripe.objects[session["subscription"]]["billing_mode"] == {"type": "flexible"}
    assert predict_on(shop, MODEL, key).status_code == 201
    assert predict_on(shop, CATS, key).status_code == 201


def test_a_failed_payment_suspends_the_key_and_paying_brings_it_back(shop: Shop) -> None:
    key, session = shop.buy()
    assert predict(shop.proxy, bearer(key)).status_code == 201
    for status in ("past_due", "unpaid"):
        assert [d["status"] for d in shop.set_status(session["subscription"], status)] == [200]
        refused = predict(shop.proxy, bearer(key))
        assert refused.status_code == 402 and f"the subscription is {status}" in refused.json()["detail"]
        assert shop.proxy.get("/v1/usage", headers=bearer(key)).status_code == 200  # still theirs to read
    shop.set_status(session["subscription"], "active")
    assert predict(shop.proxy, bearer(key)).status_code == 201


def test_a_retried_checkout_event_processed_after_the_subscription_ended_issues_no_live_key(
    shop: Shop,
) -> None:
    # The proxy was unreachable while the customer paid and then cancelled at once; Stripe retries
    # the checkout event later, after the subscription is gone.
    endpoint = shop.stripe.of("webhook_endpoint")[0]
    shop.sdk.v1.webhook_endpoints.update(endpoint["id"], {"disabled": True})
    _, session_id = shop.start_checkout()
    session = shop.complete(session_id)["session"]
    shop.sdk.v1.subscriptions.cancel(session["subscription"])
    shop.sdk.v1.webhook_endpoints.update(endpoint["id"], {"disabled": False})
    completed = next(
        e for e in shop.stripe.webhooks.events.values() if e["type"] == "checkout.session.completed"
    )
    assert [d["status"] for d in shop.resend(completed["id"])] == [200]

    ended = shop.proxy.get(welcome_path(session_id))
    assert ended.status_code == 410 and not KEY.search(ended.text)
    with shop.stores() as stores:
        assert [k for k in stores.ledger.api_keys() if k.revoked_at is None] == []


def test_a_delayed_payment_gets_its_key_once_the_payment_clears(shop: Shop) -> None:
    _, session_id = shop.start_checkout()
    httpx.post(
        f"{shop.stripe_url}/_test/checkout/sessions/{session_id}/complete", json={"payment": "delayed"}
    )
    waiting = shop.proxy.get(welcome_path(session_id))
    assert waiting.status_code == 202 and not KEY.search(waiting.text)
    cleared = httpx.post(
        f"{shop.stripe_url}/_test/checkout/sessions/{session_id}/async_payment", json={"outcome": "succeeded"}
    ).json()
    assert {d["type"]: d["status"] for d in cleared["deliveries"]}[
        "checkout.session.async_payment_succeeded"
    ] == 200
    (key,) = KEY.findall(shop.proxy.get(welcome_path(session_id)).text)
    assert predict(shop.proxy, bearer(key)).status_code == 201


def test_after_a_price_change_the_customer_is_billed_what_their_subscription_charges(shop: Shop) -> None:
    key, session = shop.buy()
    shop.fake.price = "0.002"  # the owner raised the price in the manifest, not yet at Stripe
    first = predict(shop.proxy, bearer(key)).json()
    assert first["billing"]["amount"] == "0.0000065"  # 13 ms at the subscription's $0.0005/s

    report = shop.publish({MODEL: "0.002"})  # now at Stripe: a new price, the subscription moved
    assert any(f"{session['subscription']} ({session['customer']}): moved {MODEL}" in line for line in report)
    second = predict(shop.proxy, bearer(key)).json()
    assert second["billing"]["amount"] == "0.000026"  # 13 ms at $0.002/s
    usage = shop.proxy.get("/v1/usage", headers=bearer(key)).json()
    assert usage["amount_exact"] == "0.0000325" and usage["predict_time_ms"] == 26


def test_a_create_by_version_of_a_model_the_subscription_does_not_price_is_canceled_and_refused(
    shop: Shop,
) -> None:
    key, session = shop.buy()
    refused = shop.proxy.post(
        "/v1/predictions", json={"version": CATS, "input": IMAGE}, headers={**bearer(key), "Prefer": "wait"}
    )
    assert refused.status_code == 402 and CATS in refused.json()["detail"]
    (created,) = [seen for seen in shop.fake.seen if seen["path"] == "/v1/predictions"]
    cancels = [seen["path"] for seen in shop.fake.seen if seen["path"].endswith("/cancel")]
    assert created["method"] == "POST" and len(cancels) == 1 and "output" not in refused.text
    with shop.stores() as stores:
        assert stores.usage.usage_of(f"customer:{session['customer']}") == []
