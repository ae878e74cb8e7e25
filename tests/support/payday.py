"""A payday at the test Stripe: two priced models, a customer subscribed to both, the customer's
predictions delivered as meter events, the period invoiced and paid, and the authors' Express
accounts; the ledger it all happened in."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import stripe

from devtools.teststripe.server import State
from devtools.teststripe.server import create_app as create_stripe
from proxy import create_app
from proxy.billing import stripe_api
from proxy.billing.catalog import Product, price_lookup_key, sync
from proxy.billing.payouts.invoices import InvoiceReader
from proxy.billing.payouts.store import PaidInvoice, PayoutLedger
from proxy.billing.store import UsageStore
from proxy.config import BillingConfig, load_config
from tests.support.billing import drain, wait_until
from tests.support.inference import TOKEN
from tests.support.payouts import CATS, DIGITS, express_author, invoice_period, sdk, use
from tests.support.proxy import FakeInference
from tests.support.servers import bound_socket, serve, url_of

PRICE = "0.05"  # $ per second: a 2.5 s prediction is 12.5 cents


def products(url: str, models: tuple[str, ...] = (DIGITS, CATS)) -> None:
    async def run() -> None:
        connection = stripe_api.connect("sk_test_owner", BillingConfig(stripe_api_base=url))
        try:
            await sync(connection.client, [Product(model, Decimal(PRICE)) for model in models])
        finally:
            await connection.aclose()

    asyncio.run(run())


def subscribe(client: stripe.StripeClient, models: tuple[str, ...] = (DIGITS, CATS)) -> tuple[str, str]:
    """A customer subscribed to each model's metered price: (customer, subscription)."""
    customer = client.v1.customers.create({"email": "buyer@example.com"}).id
    prices = client.v1.prices.list({"lookup_keys": [price_lookup_key(model) for model in models]}).data
    subscription = client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": p.id} for p in prices]}
    )
    return customer, subscription.id


@dataclass
class Payday:
    invoice: dict[str, Any]
    paid: PaidInvoice
    accounts: dict[str, str]  # author -> acct_


def payday(
    client: stripe.StripeClient,
    url: str,
    usage: UsageStore,
    ledger: PayoutLedger,
    predictions: dict[str, int],
) -> Payday:
    """`predictions` per model, 2.5 s each, billed, metered and delivered; the period invoiced;
    ada and bob given onboarded Express accounts; the invoice read as the webhook reads it."""
    customer, subscription = subscribe(client)
    start = datetime.datetime.now(datetime.UTC).replace(second=0, microsecond=0) - datetime.timedelta(
        minutes=5
    )
    count = 0
    for model, n in predictions.items():
        for _ in range(n):
            count += 1
            use(
                usage,
                f"pred{count:04d}",
                customer,
                model,
                2500,
                PRICE,
                start + datetime.timedelta(seconds=count),
                delivered=False,
            )
    drain(usage, url)
    invoice = invoice_period(url, subscription, start, start + datetime.timedelta(minutes=5))["invoice"]
    accounts = {}
    for author in ("ada", "bob"):
        accounts[author] = express_author(client, url)
        ledger.add_author(author, f"{author}@example.com", "2026-01-01T00:00:00+00:00")
        ledger.set_account(author, accounts[author], "2026-01-01T00:00:00+00:00")
        ledger.update_account(
            (f"evt_{author}", "account.updated"), accounts[author], True, True, "2026-01-01"
        )

    async def read() -> PaidInvoice:
        connection = stripe_api.connect("sk_test_proxy", BillingConfig(stripe_api_base=url))
        try:
            return await InvoiceReader(connection.client).paid(invoice)
        finally:
            await connection.aclose()

    return Payday(invoice, asyncio.run(read()), accounts)


CONFIG = """
name = "payouts-test"
main = "proxy/app.py"

[vars]
OWNER = "modelfolio"
UPSTREAM_URL = "{upstream}"
PUBLIC_ORIGIN = "{proxy}"
LEDGER_PATH = "{tmp}/ledger.sqlite3"
SITE_DIR = "{tmp}/dist"

[billing]
stripe_api_base = "{stripe}"
stripe_meter_events_base = "{stripe}"
timeout_s = 2
poll_interval_s = 0.05
backoff_base_s = 0.01
backoff_max_s = 0.2

[payouts]
default_share = "0.30"

[payouts.models.digits]
author = "ada"
share = "0.5"

[payouts.models.cats]
author = "bob"
"""

PLATFORM_EVENTS = [
    "invoice.paid",
    "charge.refunded",
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
]


@dataclass
class Payroll:
    """The proxy (its own config folder, as the owner's commands read it) in front of a fake
    model server with two models at PRICE, billing and paying authors through the test Stripe."""

    stripe: State
    stripe_url: str
    sdk: stripe.StripeClient
    proxy: httpx.Client
    config_dir: Path
    ledger_url: str
    environ: dict[str, str]

    def predict(self, model: str, key: str) -> dict[str, Any]:
        answer = self.proxy.post(
            f"/v1/models/{model}/predictions",
            json={"input": {"image": "data:image/png;base64,iVBORw0KGgo="}},
            headers={"Authorization": f"Bearer {key}", "Prefer": "wait"},
        )
        assert answer.status_code in (200, 201), answer.text
        body: dict[str, Any] = answer.json()
        return body

    def event(self, event_type: str, object_id: str) -> str:
        """The id of the last event of `event_type` about `object_id`."""
        found = [
            e["id"]
            for e in self.stripe.webhooks.events.values()
            if e["type"] == event_type and e.get("data", {}).get("object", {}).get("id") == object_id
        ]
        return found[-1]

    def delivered(self, event_id: str) -> None:
        """Stripe retries a webhook until the endpoint answers 2xx: so does this, by resending."""

        def applied() -> bool:
            deliveries = [d for d in self.stripe.webhooks.deliveries if d["event"] == event_id]
            if any(200 <= d["status"] < 300 for d in deliveries):
                return True
            httpx.post(f"{self.stripe_url}/_test/events/{event_id}/resend", timeout=30)
            return False

        wait_until(applied, f"the proxy to take {event_id}", timeout_s=60)


@contextlib.contextmanager
def open_payroll(tmp_path: Path, ledger_url: str | None = None) -> Iterator[Payroll]:
    """The payroll on `ledger_url` (DATABASE_URL, as an owner sets it), or on the embedded SQLite."""
    app = create_stripe(seed=11)
    with contextlib.ExitStack() as stack:
        stripe_url = stack.enter_context(serve(app))
        upstream = stack.enter_context(serve(FakeInference(predict_time=2.5, price=PRICE).app()))
        sock = bound_socket()
        proxy_url = url_of(sock)
        client = sdk(stripe_url)
        platform = client.v1.webhook_endpoints.create(
            {"url": f"{proxy_url}/stripe/webhook", "enabled_events": PLATFORM_EVENTS}
        )
        connect = client.v1.webhook_endpoints.create(
            {"url": f"{proxy_url}/stripe/webhook", "enabled_events": ["account.updated"], "connect": True}
        )
        products(stripe_url)
        folder = tmp_path / "wrangler-like-config"
        folder.mkdir()
        (folder / "wrangler.toml").write_text(
            CONFIG.format(upstream=upstream, proxy=proxy_url, tmp=tmp_path, stripe=stripe_url)
        )
        environ = {
            "INFERENCE_TOKEN": TOKEN,
            "STRIPE_SECRET_KEY": "sk_test_proxy",
            "STRIPE_WEBHOOK_SECRET": f"{platform.secret},{connect.secret}",
        }
        if ledger_url is not None:
            environ["DATABASE_URL"] = ledger_url
        config = load_config(folder, environ=environ)
        stack.enter_context(serve(create_app(config), sock=sock))
        proxy = stack.enter_context(httpx.Client(base_url=proxy_url, timeout=30))
        yield Payroll(
            app.state.stripe,
            stripe_url,
            client,
            proxy,
            folder,
            ledger_url or f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
            environ,
        )
