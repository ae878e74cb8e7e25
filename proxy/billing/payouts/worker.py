"""Delivers the transfer outbox to Stripe Connect: each payout becomes one transfer, each
reversal one transfer reversal, exactly once.

Exactly once rests on two things. Each call carries an idempotency key derived from what it
pays (invoice and author; for a reversal, also the refunded total it answers), so a retry within
Stripe's 24 hours gets the first answer. And before every call the worker asks Stripe whether
the transfer (by its `transfer_group` = invoice id, destination and metadata) or the reversal
(by its metadata, among the transfer's reversals) already exists: a worker that died between
Stripe's answer and its ledger row, a lost answer followed by days of failures, or a ledger
restored from a backup all find it and mark it sent instead of sending it again.

Retriable failures (5xx, 409, 429, timeouts, broken connections) are retried forever with
exponential backoff and full jitter; after a 5xx, whose answer Stripe replays for the key, the
next try uses a new key generation (the lookup still stops a second transfer). A 400 (Stripe
will never take it: a destination without the transfers capability, more than the charge
holds) dead-letters the row for an operator, and reconcile reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import stripe
from anyio import to_thread

from proxy.billing.payouts.outbox import TransferOutbox, Work
from proxy.billing.payouts.store import Payout, Reversal
from proxy.errors import StorageUnavailable
from proxy.logs import log_event

LEASE_S = 60.0
_LANES = 100


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def metadata(obj: Any) -> dict[str, str]:
    """A Stripe object's metadata as a plain dict (the SDK types it loosely)."""
    found = getattr(obj, "metadata", None)
    if found is None:
        return {}
    plain = found.to_dict() if hasattr(found, "to_dict") else dict(found)
    return {str(k): str(v) for k, v in plain.items()}


def transfer_key(payout: Payout, generation: int) -> str:
    suffix = f"-r{generation}" if generation else ""
    return f"modelfolio-transfer-{payout.invoice_id}-{payout.author}{suffix}"


def reversal_key(reversal: Reversal, generation: int) -> str:
    suffix = f"-r{generation}" if generation else ""
    return f"modelfolio-reversal-{reversal.invoice_id}-{reversal.author}-{reversal.refunded_cents}{suffix}"


class TransferWorker:
    def __init__(
        self,
        outbox: TransferOutbox,
        client: stripe.StripeClient,
        *,
        concurrency: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 60.0,
        poll_interval_s: float = 2.0,
        clock: Callable[[], datetime.datetime] = utc_now,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
        lease_s: float = LEASE_S,
        owner: str | None = None,
    ) -> None:
        self._outbox = outbox
        self._client = client
        self._slots = asyncio.Semaphore(concurrency)
        self._backoff = (backoff_base_s, backoff_max_s)
        self._poll_interval_s = poll_interval_s
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lease = datetime.timedelta(seconds=lease_s)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._wake = asyncio.Event()
        self.sent = {"transfers": 0, "reversals": 0, "found": 0, "dead": 0, "retries": 0}

    def wake(self) -> None:
        """New payouts were recorded, or an author can be paid now: look at once."""
        self._wake.set()

    async def drain_once(self) -> None:
        """Sends everything sendable now; returns when each row is sent or dead-lettered."""
        now = self._now()
        lanes = await to_thread.run_sync(self._outbox.claim_lanes, self.owner, now, self._lease_end(), _LANES)
        await asyncio.gather(*(self._drain_lane(author) for author in lanes))

    async def run(self) -> None:
        renewing = asyncio.create_task(self._renew_leases())
        try:
            while True:
                self._wake.clear()
                try:
                    await self.drain_once()
                except StorageUnavailable as error:
                    log_event("payouts_paused", level=logging.WARNING, reason=str(error))
                except Exception as error:  # a bug must not stop every later payout: logged, retried
                    log_event("payouts_failed", level=logging.ERROR, error=type(error).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
        finally:
            renewing.cancel()

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self._lease.total_seconds() / 3)
            with contextlib.suppress(StorageUnavailable):
                await to_thread.run_sync(self._outbox.renew, self.owner, self._lease_end())

    async def _drain_lane(self, author: str) -> None:
        try:
            work = await to_thread.run_sync(self._outbox.work, author)
            while work is not None and (work.transfers or work.reversals):
                await self._send_all(work)
                # Reversals of the transfers just sent are sendable now.
                work = await to_thread.run_sync(self._outbox.work, author)
                if work is not None and not work.reversals:
                    break
        finally:
            with contextlib.suppress(StorageUnavailable):
                await to_thread.run_sync(self._outbox.release, self.owner, author)

    async def _send_all(self, work: Work) -> None:
        for payout in work.transfers:
            await self._deliver(payout, functools.partial(self._transfer, work.account_id, payout))
        for reversal, transfer_id in work.reversals:
            await self._deliver(reversal, functools.partial(self._reverse, transfer_id, reversal))

    async def _deliver(
        self, item: Payout | Reversal, send: Callable[[int], Awaitable[tuple[str, bool]]]
    ) -> None:
        attempts, generation = 0, item.generation
        while True:
            attempts += 1
            try:
                async with self._slots:
                    stripe_id, found = await send(generation)
            except (stripe.InvalidRequestError, stripe.IdempotencyError) as error:
                await self._dead(item, f"Stripe refused it ({error.http_status}): {error.user_message}")
                return
            except stripe.StripeError as error:
                if isinstance(error, stripe.APIError) and (error.http_status or 0) >= 500:
                    generation = await to_thread.run_sync(self._outbox.next_generation, item)
                self._note_retry(item, attempts, error)
            except Exception as error:  # timeouts and broken connections reach here as SDK errors too
                self._note_retry(item, attempts, error)
            else:
                await to_thread.run_sync(self._outbox.mark_sent, item, stripe_id, self._now())
                kind = "transfers" if isinstance(item, Payout) else "reversals"
                self.sent["found" if found else kind] += 1
                _log_sent(item, stripe_id, attempts, found)
                return
            base, ceiling = self._backoff
            await self._sleep(self._rng.uniform(0, min(ceiling, base * 2 ** min(attempts - 1, 30))))

    async def _transfer(self, account_id: str, payout: Payout, generation: int) -> tuple[str, bool]:
        listed = await self._client.v1.transfers.list_async(
            {"transfer_group": payout.invoice_id, "destination": account_id, "limit": 100}
        )
        async for transfer in listed.auto_paging_iter():
            if metadata(transfer).get("modelfolio_author") == payout.author:
                return transfer.id, True
        made = await self._client.v1.transfers.create_async(
            {
                "amount": payout.cents,
                "currency": payout.currency,
                "destination": account_id,
                "source_transaction": payout.charge_id or "",
                "transfer_group": payout.invoice_id,
                "description": f"{payout.author}'s share of invoice {payout.invoice_id}",
                "metadata": {"modelfolio_author": payout.author, "modelfolio_invoice": payout.invoice_id},
            },
            options={"idempotency_key": transfer_key(payout, generation)},
        )
        return made.id, False

    async def _reverse(self, transfer_id: str, reversal: Reversal, generation: int) -> tuple[str, bool]:
        mark = str(reversal.refunded_cents)
        listed = await self._client.v1.transfers.reversals.list_async(transfer_id, {"limit": 100})
        async for existing in listed.auto_paging_iter():
            if metadata(existing).get("modelfolio_refunded_cents") == mark:
                return existing.id, True
        made = await self._client.v1.transfers.reversals.create_async(
            transfer_id,
            {
                "amount": reversal.cents,
                "description": f"refund of invoice {reversal.invoice_id}: {reversal.author}'s share",
                "metadata": {"modelfolio_author": reversal.author, "modelfolio_refunded_cents": mark},
            },
            options={"idempotency_key": reversal_key(reversal, generation)},
        )
        return made.id, False

    async def _dead(self, item: Payout | Reversal, reason: str) -> None:
        await to_thread.run_sync(self._outbox.dead_letter, item, reason, self._now())
        self.sent["dead"] += 1
        log_event(
            "payout_dead_lettered",
            level=logging.ERROR,
            kind="transfer" if isinstance(item, Payout) else "reversal",
            invoice=item.invoice_id,
            author=item.author,
            cents=item.cents,
            reason=reason,
        )

    def _note_retry(self, item: Payout | Reversal, attempts: int, error: Exception) -> None:
        self.sent["retries"] += 1
        if attempts & (attempts - 1) == 0:  # powers of two: an outage must not flood the log
            log_event(
                "payout_retrying",
                level=logging.WARNING,
                invoice=item.invoice_id,
                author=item.author,
                attempts=attempts,
                error=type(error).__name__,
                status=getattr(error, "http_status", None),
            )

    def _now(self) -> str:
        return self._clock().isoformat(timespec="microseconds")

    def _lease_end(self) -> str:
        return (self._clock() + self._lease).isoformat(timespec="microseconds")


def _log_sent(item: Payout | Reversal, stripe_id: str, attempts: int, found: bool) -> None:
    log_event(
        "payout_transferred" if isinstance(item, Payout) else "payout_reversed",
        invoice=item.invoice_id,
        author=item.author,
        cents=item.cents,
        stripe_id=stripe_id,
        attempts=attempts,
        already_at_stripe=found,
    )
