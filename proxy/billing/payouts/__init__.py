"""Model authors paid through Stripe Connect, with separate charges and transfers: the platform's
metered invoice charges the customer; once it is paid, each author's share of the predictions on
it becomes one transfer to the author's Express account, drawn on that invoice's charge.

    shares.py    Decimal shares, one rounding per transfer, remainders carried
    store.py     authors, which invoice shared out each prediction, payouts and reversals
    outbox.py    the transfer outbox: leased lanes, one author each
    invoices.py  a paid invoice's usage lines and charge, asked of Stripe
    events.py    invoice.paid, charge.refunded, account.updated (webhook handlers)
    worker.py    delivers transfers and reversals exactly once
    reconcile.py, commands.py   `python -m proxy authors ...`, and transfers in `billing reconcile`

Who wrote which model, and their share, is the owner's `[payouts]` in wrangler.toml.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import stripe
from anyio import to_thread

from proxy.billing.payouts.invoices import InvoiceReader
from proxy.billing.payouts.outbox import Balance, PayoutStats, TransferOutbox
from proxy.billing.payouts.store import PayoutLedger
from proxy.billing.payouts.worker import TransferWorker
from proxy.config import Config
from proxy.logs import log_event
from proxy.storage import Database


class Payouts:
    def __init__(self, config: Config, database: Database, client: stripe.StripeClient | None) -> None:
        self.config = config.payouts
        self._billing = config.billing
        self.ledger = PayoutLedger(database)
        self.outbox = TransferOutbox(database)
        self.reader = InvoiceReader(client) if client is not None else None
        self._client = client
        self.worker: TransferWorker | None = None

    @property
    def authored(self) -> bool:
        """Whether any model has an author to pay."""
        return bool(self.config.models)

    def wake(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    async def stats(self) -> PayoutStats:
        return await to_thread.run_sync(self.outbox.stats)

    async def balances(self) -> list[Balance]:
        return await to_thread.run_sync(self.outbox.balances)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """For the proxy's lifespan: the transfer worker, with a Stripe client only."""
        if self._client is None:
            yield
            return
        billing = self._billing
        self.worker = TransferWorker(
            self.outbox,
            self._client,
            concurrency=billing.concurrency,
            backoff_base_s=billing.backoff_base_s,
            backoff_max_s=billing.backoff_max_s,
            poll_interval_s=billing.poll_interval_s,
            lease_s=billing.lease_s,
        )
        task = asyncio.create_task(self.worker.run())
        log_event("payouts_started", authored_models=sorted(self.config.models))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.worker = None


__all__ = ["Balance", "PayoutStats", "Payouts"]
