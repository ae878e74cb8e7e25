"""Payout helpers: usage lines priced as the biller prices them, a paid invoice's facts, the test
Stripe's Connect and invoice calls as a test plays them, and a transfer worker to drain."""

from __future__ import annotations

import asyncio
import datetime
import random
from decimal import Decimal
from typing import Any

import httpx
import stripe

from proxy._payouts_config import AuthorShare
from proxy.billing import stripe_api
from proxy.billing.money import amount_for, exact, meter_event_name
from proxy.billing.payouts.outbox import TransferOutbox
from proxy.billing.payouts.store import PaidInvoice, UsageLine
from proxy.billing.payouts.worker import TransferWorker
from proxy.billing.store import Usage, UsageStore
from proxy.config import BillingConfig

DIGITS, CATS = "modelfolio/digits", "modelfolio/cats"
# ada wrote digits and takes half; bob wrote cats at the owner's default 30 %.
AUTHORS = {DIGITS: AuthorShare("ada", Decimal("0.5")), CATS: AuthorShare("bob", Decimal("0.30"))}
START = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return START + datetime.timedelta(seconds=seconds)


def iso(moment: datetime.datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def use(
    store: UsageStore,
    prediction_id: str,
    customer: str,
    model: str,
    ms: int,
    price: str,
    when: datetime.datetime,
    *,
    delivered: bool = True,
) -> Decimal:
    """A customer's prediction billed (and its meter event marked delivered, as the meter worker
    leaves it, unless `delivered` is False); returns its exact amount."""
    amount = amount_for(Decimal(price), ms)
    usage = Usage(
        prediction_id, f"customer:{customer}", customer, model, "v1", ms, price, exact(amount), iso(when)
    )
    store.record_usage(usage, meter_event_name(model))
    if delivered:
        store.mark_delivered([prediction_id], iso(when))
    return amount


def paid_invoice(
    invoice_id: str,
    customer: str,
    start: datetime.datetime,
    end: datetime.datetime,
    *,
    charge: str | None = "ch_1",
    charge_cents: int = 10_000,
    refunded_cents: int = 0,
    models: tuple[str, ...] = (DIGITS, CATS),
) -> PaidInvoice:
    lines = tuple(UsageLine(meter_event_name(model), iso(start), iso(end), None) for model in models)
    return PaidInvoice(
        invoice_id, customer, "usd", charge, charge_cents if charge else 0, refunded_cents, lines
    )


def sdk(url: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_owner", base_addresses={"api": url}, http_client=stripe.RequestsClient()
    )


def express_author(client: stripe.StripeClient, url: str, *, onboarded: bool = True) -> str:
    account = client.v1.accounts.create(
        {"type": "express", "email": "ada@example.com", "capabilities": {"transfers": {"requested": True}}}
    )
    if onboarded:
        httpx.post(f"{url}/_test/accounts/{account.id}/onboard").raise_for_status()
    return account.id


def invoice_period(
    url: str, subscription: str, start: datetime.datetime, end: datetime.datetime
) -> dict[str, Any]:
    """The test Stripe closes a billing period: the invoice, paid, and its webhooks' deliveries."""
    answer = httpx.post(
        f"{url}/_test/subscriptions/{subscription}/invoice",
        json={"period_start": int(start.timestamp()), "period_end": int(end.timestamp())},
        timeout=30,
    )
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    return body


def charge_of(client: stripe.StripeClient, invoice_id: str) -> Any:
    payment = client.v1.invoice_payments.list({"invoice": invoice_id}).data[0]
    intent = client.v1.payment_intents.retrieve(str(payment.payment.payment_intent))
    return client.v1.charges.retrieve(str(intent.latest_charge))


def transfer_worker(outbox: TransferOutbox, url: str, **options: Any) -> tuple[TransferWorker, Any]:
    connection = stripe_api.connect(
        "sk_test_payouts", BillingConfig(stripe_api_base=url, stripe_meter_events_base=url, timeout_s=2)
    )
    defaults: dict[str, Any] = {"backoff_base_s": 0.001, "backoff_max_s": 0.02, "rng": random.Random(2)}
    return TransferWorker(outbox, connection.client, **{**defaults, **options}), connection


def drain_transfers(outbox: TransferOutbox, url: str, **options: Any) -> TransferWorker:
    async def run() -> TransferWorker:
        worker, connection = transfer_worker(outbox, url, **options)
        try:
            await worker.drain_once()
        finally:
            await connection.aclose()
        return worker

    return asyncio.run(run())


def stripe_transfers(state: Any) -> list[dict[str, Any]]:
    return [t for t in state.of("transfer") if t["metadata"].get("modelfolio_author")]
