"""Billing, as its own system behind one small interface. The edge (proxy/api.py and friends)
knows only `Billing`: `bill(prediction, caller)` when it sees a prediction, `usage(caller)` for
`/v1/usage`, and the routes and background worker it mounts. Only this package imports `stripe`.

    biller.py        the first sight of a succeeded prediction -> one usage line (+ a meter event)
    money.py         Decimal arithmetic: milliseconds, amounts, cents, meter names
    store.py         usage lines and the meter outbox (leased lanes), in the proxy's database
    caps.py          monthly spend caps on a customer or a key, admitted against atomic totals
    stripe_store.py  Stripe's webhook events, checkout keys, meter error flags
    subscriptions.py what each customer's subscription pays for, mirrored from Stripe
    metering.py      the worker that delivers the outbox to Stripe Billing Meters, exactly once
    stripe_api.py    the one Stripe client, and the v2 meter event stream
    webhooks.py      POST /stripe/webhook (subscription_events.py: checkout and subscriptions)
    checkout.py      self-serve API keys;  recovery.py  a new key through the owner's one-time link
    account.py       a customer's own spend cap and key rotation, over the API
    catalog.py, reconcile.py, commands.py   `python -m proxy billing ...`
    payouts/         model authors paid through Stripe Connect (transfers, reversals)
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import stripe
from anyio import to_thread
from starlette.requests import Request
from starlette.routing import BaseRoute

from proxy.auth import Caller
from proxy.billing import caps, stripe_api
from proxy.billing.biller import Biller, ModelFacts, summarize
from proxy.billing.caps import period_of
from proxy.billing.metering import MeterWorker
from proxy.billing.payouts import Payouts
from proxy.billing.store import OutboxStats, Usage, UsageStore
from proxy.billing.stripe_store import StripeStore
from proxy.billing.subscriptions import SubscriptionStore, refuse_unless_paid, refuse_unless_priced
from proxy.billing.worker_lifespan import worker_running
from proxy.config import Config
from proxy.errors import PaymentRequired, RequestError
from proxy.forward import Upstream
from proxy.ledger import Ledger
from proxy.storage import Database


class Billing:
    def __init__(
        self,
        config: Config,
        database: Database,
        upstream: Upstream,
        clock: Callable[[], datetime.datetime],
        admit: Callable[[Request], Awaitable[Any]],
        identify: Callable[[Request], Awaitable[Caller]] | None = None,
    ) -> None:
        """`admit(request)` is the edge's own check of a caller (rate limits) for billing's
        public pages (checkout); `identify(request)` the same for its API calls that create
        nothing (a spend cap, a key rotation), returning the caller."""
        self.config = config
        self.upstream = upstream
        self.usage_store = UsageStore(database)
        self.stripe_store = StripeStore(database)
        self.subscriptions = SubscriptionStore(database)
        self.caps = caps.CapStore(database)
        key = config.secrets.stripe_secret_key
        self._connection = stripe_api.connect(key, config.billing) if key else None
        # Customers pay what their subscription's item charges; the model server's price is
        # the demo's (the owner's cost), and everyone's without Stripe.
        charged = self.subscriptions.price if self._connection is not None else None
        self.biller = Biller(self.usage_store, upstream, clock, charged)
        self.clock = clock
        self.admit = admit
        self.identify = identify or admit
        self.ledger = Ledger(database)
        self.worker: MeterWorker | None = None
        self.payouts = Payouts(config, database, self.stripe)

    @property
    def stripe(self) -> stripe.StripeClient | None:
        """The one Stripe client: None without STRIPE_SECRET_KEY."""
        return self._connection.client if self._connection else None

    def now(self) -> str:
        return self.clock().isoformat(timespec="microseconds")

    @property
    def enforcing(self) -> bool:
        """Keys are held to their subscriptions only where Stripe can charge them: with
        STRIPE_SECRET_KEY. Without it (the quick start) usage stays in the ledger only."""
        return self._connection is not None

    async def check_create(self, caller: Caller, model: str | None) -> None:
        """Raises PaymentRequired (402) unless a prediction `caller` asks for can be billed: a
        customer's subscription is paid up and has a price for `model` (None: not known yet;
        `check_model` checks it once the model server says)."""
        if caller.customer is None:
            return
        if self.enforcing:
            access = await to_thread.run_sync(self.subscriptions.access, caller.customer)
            refuse_unless_paid(access)
            if model is not None:
                refuse_unless_priced(access, model)
        period = period_of(self.clock())
        caps.check(
            await to_thread.run_sync(self.caps.caps_of, caller.customer, caller.key_id, period), period
        )

    async def check_model(self, caller: Caller, model: str, prediction_id: str) -> None:
        """`check_create`'s model check for a create by version, which learns its model only from
        the model server's answer: a prediction no price charges is canceled at once and refused
        (and never billed: the biller refuses it too)."""
        if not self.enforcing or caller.customer is None:
            return
        try:
            refuse_unless_priced(await to_thread.run_sync(self.subscriptions.access, caller.customer), model)
        except PaymentRequired:
            with contextlib.suppress(RequestError):
                await self.upstream.send("POST", f"/v1/predictions/{prediction_id}/cancel")
            raise

    async def bill(self, prediction: Any, caller: Caller, model: str | None = None) -> Any:
        """Bills a succeeded prediction once, whatever the number of calls, and returns it with
        `metrics.predict_time_ms` and `billing` added; anything else comes back unchanged."""
        return await self.biller.bill(prediction, caller, model)

    async def record(self, usage: Usage) -> Usage:
        return await self.biller.record(usage)

    def remember_model(self, model: str, model_object: Any) -> None:
        self.biller.remember_model(model, model_object)

    async def facts(self, model: str) -> ModelFacts | None:
        """The model's price and latest version (refreshed from the model server now and then)."""
        return await self.biller.facts(model)

    async def usage(self, caller: Caller) -> dict[str, Any]:
        body = summarize(await to_thread.run_sync(self.usage_store.usage_of, caller.id))
        if caller.customer is not None:
            period = period_of(self.clock())
            found = await to_thread.run_sync(self.caps.caps_of, caller.customer, caller.key_id, period)
            body["spend_caps"] = [cap.view(period) for cap in found]
        return body

    async def outbox(self) -> OutboxStats:
        return await to_thread.run_sync(self.usage_store.outbox_stats)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """For the app's lifespan: the meter worker (with a Stripe key), and the client closed after."""
        try:
            async with worker_running(self.config, self.usage_store, self.stripe) as worker:
                self.worker = worker
                async with self.payouts.running():
                    yield
        finally:
            self.worker = None
            if self._connection is not None:
                await self._connection.aclose()


def billing_of(request: Request) -> Billing:
    billing: Billing = request.app.state.billing
    return billing


def routes() -> list[BaseRoute]:
    from proxy.billing import account, checkout, recovery, webhooks

    return [*webhooks.ROUTES, *checkout.ROUTES, *account.ROUTES, *recovery.ROUTES]


__all__ = ["Billing", "ModelFacts", "Usage", "billing_of", "routes"]
