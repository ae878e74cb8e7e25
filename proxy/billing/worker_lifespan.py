"""The meter worker in the proxy's lifespan: it runs with a Stripe client (STRIPE_SECRET_KEY).
Without one, bills still go into the outbox and nothing delivers them, so the proxy says so: at
start, then every `[billing] reminder_s` while the outbox holds events, with how many and since
when (and /readyz carries the same warning)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import stripe
from anyio import to_thread

from proxy.billing.metering import MeterWorker
from proxy.billing.store import UsageStore
from proxy.config import Config
from proxy.errors import StorageUnavailable
from proxy.logs import log_event

UNDELIVERED = "STRIPE_SECRET_KEY is not set: meter events wait in the ledger's outbox and nobody is charged"


@contextlib.asynccontextmanager
async def worker_running(
    config: Config, store: UsageStore, client: stripe.StripeClient | None
) -> AsyncIterator[MeterWorker | None]:
    if client is None:
        reminding = asyncio.create_task(_remind(store, config.billing.reminder_s))
        try:
            yield None
        finally:
            reminding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reminding
        return
    worker = MeterWorker.from_config(store, client, config.billing)
    task = asyncio.create_task(worker.run())
    log_event("metering_started", stripe_api_base=config.billing.stripe_api_base)
    try:
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.aclose()


async def _remind(store: UsageStore, every_s: float) -> None:
    """The start-up warning, then one every `every_s` while the outbox is not empty."""
    first = True
    while True:
        try:
            stats = await to_thread.run_sync(store.outbox_stats)
        except StorageUnavailable:
            stats = None
        if first or (stats is not None and stats.backlog):
            log_event(
                "metering_disabled",
                level=logging.WARNING,
                reason=UNDELIVERED,
                outbox_backlog=stats.backlog if stats else None,
                oldest=stats.oldest if stats else None,
            )
        first = False
        await asyncio.sleep(every_s)
