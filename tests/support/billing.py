"""Billing helpers: the test Stripe's catalog and totals, ledger rows, a metering worker, and a
shop (the test Stripe with a priced model, and the proxy in front of a fake inference server)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import stripe

from devtools.teststripe.server import State
from devtools.teststripe.server import create_app as create_stripe
from proxy import Secrets
from proxy.billing import stripe_api
from proxy.billing.catalog import Product, sync
from proxy.billing.metering import MeterWorker
from proxy.billing.money import meter_event_name
from proxy.billing.reconcile import reconcile
from proxy.billing.store import Usage, UsageStore
from proxy.billing.stripe_store import StripeStore
from proxy.billing.subscriptions import Item, Subscription, SubscriptionStore, parse
from proxy.config import BillingConfig
from proxy.ledger import Ledger
from proxy.storage import open_database
from tests.support.proxy import PRICE, TOKEN, FakeInference, proxy_in_front_of
from tests.support.servers import serve

MODELS = ("modelfolio/digits", "modelfolio/cats")


def catalog(url: str, customers: int) -> tuple[dict[str, str], list[str]]:
    """Meters and metered prices per model, and customers, made with the SDK as an operator would."""
    client = stripe.StripeClient(
        "sk_test_setup", base_addresses={"api": url}, http_client=stripe.RequestsClient()
    )
    meters = {}
    for model in MODELS:
        name = meter_event_name(model)
        meters[name] = client.v1.billing.meters.create(
            {"display_name": model, "event_name": name, "default_aggregation": {"formula": "sum"}}
        ).id
        client.v1.prices.create(  # $0.0005 a second, what `bill` bills
            {
                "currency": "usd",
                "unit_amount_decimal": "0.00005",
                "product_data": {"name": model},
                "recurring": {"interval": "month", "usage_type": "metered", "meter": meters[name]},
                "lookup_key": f"{name}_usd_month",
            }
        )
    return meters, [client.v1.customers.create({"name": f"c{i}"}).id for i in range(customers)]


def bill(
    store: UsageStore, prediction_id: str, customer: str, model: str, ms: int, at: datetime.datetime
) -> None:
    usage = Usage(
        prediction_id=prediction_id,
        caller="key_x",
        stripe_customer=customer,
        model=model,
        version=None,
        predict_time_ms=ms,
        price_per_second="0.0005",
        amount="0",
        created_at=at.isoformat(timespec="microseconds"),
    )
    store.record_usage(usage, meter_event_name(model))


def worker(store: UsageStore, url: str, *, timeout_s: float = 5.0, **options: Any) -> tuple[MeterWorker, Any]:
    billing = BillingConfig(
        stripe_api_base=url, stripe_meter_events_base=url, timeout_s=timeout_s, concurrency=32
    )
    connection = stripe_api.connect("sk_test_worker", billing)
    defaults: dict[str, Any] = {
        "concurrency": 32,
        "backoff_base_s": 0.001,
        "backoff_max_s": 0.02,
        "rng": random.Random(1),
    }
    return MeterWorker(store, connection.client, **{**defaults, **options}), connection


def drain(store: UsageStore, url: str, **options: Any) -> MeterWorker:
    async def run() -> MeterWorker:
        meter_worker, connection = worker(store, url, **options)
        try:
            await meter_worker.drain_once()
        finally:
            await connection.aclose()
        return meter_worker

    return asyncio.run(run())


def stripe_totals(state: State, meters: dict[str, str], customers: list[str]) -> dict[tuple[str, str], int]:
    now = int(time.time())
    return {
        (customer, name): int(state.aggregated(meter, customer, now - 86400, now + 3600))
        for name, meter in meters.items()
        for customer in customers
    }


def ledger_totals(store: UsageStore) -> dict[tuple[str, str], int]:
    return store.delivered_meter_totals("0", "9")


async def reconciled(
    store: UsageStore,
    url: str,
    customers: list[str],
    *,
    notes: list[str] | None = None,
    at: datetime.datetime | None = None,
) -> tuple[list[Any], int]:
    """Reconcile's millisecond check over the last hour, as if run at `at` (default now)."""
    billing = BillingConfig(stripe_api_base=url, stripe_meter_events_base=url)
    connection = stripe_api.connect("sk_test_reconcile", billing)
    try:
        return await reconcile(
            connection.client,
            store,
            now() - datetime.timedelta(hours=1),
            now() + datetime.timedelta(minutes=1),
            set(customers),
            notes=notes,
            now=at,
        )
    finally:
        await connection.aclose()


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


MODEL = "modelfolio/digits"


KEY = re.compile(r"mf_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


EVENTS = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "v1.billing.meter.error_report_triggered",
    "v1.billing.meter.no_meter_found",
]


@dataclass
class Shop:
    stripe: State
    stripe_url: str
    sdk: stripe.StripeClient
    proxy: httpx.Client  # one browser: it keeps its cookies
    webhook_secret: str
    ledger_path: Path
    fake: FakeInference  # the model server: its price_per_second, what it was sent

    def stores(self) -> contextlib.AbstractContextManager[Stores]:
        return open_stores(f"sqlite:///{self.ledger_path}")

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

    def publish(self, prices: dict[str, str]) -> list[str]:
        """The owner runs `billing sync-catalog` with these models' prices (USD per second)."""
        return make_catalog(self.stripe_url, prices)

    def set_status(self, subscription_id: str, status: str) -> list[dict[str, Any]]:
        """The customer's bank: a failed or recovered payment moves the subscription."""
        answer = httpx.post(
            f"{self.stripe_url}/_test/subscriptions/{subscription_id}/status", json={"status": status}
        )
        return answer.json()["deliveries"]


def welcome_path(session_id: str) -> str:
    return f"/billing/welcome?session_id={session_id}"


def make_catalog(url: str, prices: dict[str, str] | None = None) -> list[str]:
    """`billing sync-catalog` for these models and prices (USD per second): meters, prices, and
    every subscription given the models it lacks. Returns its report."""

    async def run() -> list[str]:
        connection = stripe_api.connect(
            "sk_test_owner", BillingConfig(stripe_api_base=url, stripe_meter_events_base=url)
        )
        try:
            products = [Product(model, Decimal(price)) for model, price in (prices or {MODEL: PRICE}).items()]
            return await sync(connection.client, products)
        finally:
            await connection.aclose()

    return asyncio.run(run())


def subscribe(stripe_url: str, stores: Stores, customer: str, models: tuple[str, ...] = (MODEL,)) -> str:
    """A subscription at the test Stripe with the models' current prices, mirrored in the ledger
    as its webhook would be (for tests whose proxy has no webhook endpoint)."""
    sdk = stripe.StripeClient(
        "sk_test_sub", base_addresses={"api": stripe_url}, http_client=stripe.RequestsClient()
    )
    keys = [f"{meter_event_name(model)}_usd_month" for model in models]
    prices = [p.id for p in sdk.v1.prices.list({"lookup_keys": keys, "active": True}).data]
    made = sdk.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": p} for p in prices], "billing_mode": {"type": "flexible"}}
    )
    stores.subscriptions.record(parse(made.to_dict(), made.created, {}), now().isoformat())
    return str(made.id)


def mirror_subscription(
    stores: Stores,
    customer: str,
    models: tuple[str, ...] = (MODEL,),
    *,
    status: str = "active",
    cents_per_ms: str = "0.00005",
    stripe_time: int = 1,
) -> str:
    """A subscription in the ledger only, as webhooks would have written it, for a customer the
    test Stripe need not know."""
    items = tuple(
        Item(f"si_{customer}_{i}", meter_event_name(model), f"price_{i}", cents_per_ms)
        for i, model in enumerate(models)
    )
    state = Subscription(f"sub_{customer}", customer, status, "flexible", stripe_time, items)
    stores.subscriptions.record(state, now().isoformat())
    return state.id


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
        fake = FakeInference()
        with proxy_in_front_of(fake.app(), tmp_path, secrets=secrets, billing=billing) as client:
            sdk.v1.webhook_endpoints.update(
                endpoint.id, {"url": f"{str(client.base_url).rstrip('/')}/stripe/webhook"}
            )
            yield Shop(
                app.state.stripe,
                stripe_url,
                sdk,
                client,
                str(endpoint.secret),
                tmp_path / "ledger.sqlite3",
                fake,
            )


def wait_until(condition: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Clock:
    """The test Stripe's clock, which a test can move on."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


@dataclass
class Stores:
    """The proxy's stores on one ledger, as the proxy itself opens them."""

    ledger: Ledger
    usage: UsageStore
    stripe: StripeStore
    subscriptions: SubscriptionStore


@contextlib.contextmanager
def open_stores(url: str) -> Iterator[Stores]:
    database = open_database(url)
    try:
        yield Stores(
            Ledger(database), UsageStore(database), StripeStore(database), SubscriptionStore(database)
        )
    finally:
        database.close()
