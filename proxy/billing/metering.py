"""Delivers the ledger's meter outbox to Stripe as Billing Meter events, exactly once.

The request path only writes the outbox (proxy/billing/biller.py); workers drain it, one per proxy
process, any number of them on one database: each leases whole lanes (proxy/billing/store.py), so
no event is sent by two workers at once and a dead worker's lanes pass to another when its
leases run out. Exactly once
rests on the event `identifier` = prediction id: Stripe refuses a second event with it, and that
refusal (its code, duplicate_meter_event) means "already delivered". Every retriable failure
(5xx, 429, timeouts, broken connections, and a timestamp refused because our clock runs ahead of
Stripe's) is retried with exponential backoff and full jitter, in its own lane per (customer,
meter): Stripe allows one call in flight per customer and meter, and one customer's trouble must
never hold back another's events. Retries stop 23 hours after an event's first attempt, before
Stripe forgets its identifier (proxy/billing/meter_rules.py); such events, and those Stripe can
never accept, are dead letters, each with an error log line, for `billing dead-letters`.

A backlog larger than `stream_above` goes through Stripe's v2 meter event stream instead, 100
events a call over all lanes (the stream has no per-customer limit). The identifier still makes a
retried batch harmless, and rows are marked delivered only after their call succeeded. The stream
validates asynchronously, so it takes only events that pass the checks v1 would answer at once
(the window, the identifier's length); the rest keep going one by one through v1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import random
import secrets
import socket
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

import stripe
from anyio import to_thread
from stripe.params.billing import MeterEventCreateParams

from proxy.billing import stripe_api
from proxy.billing.meter_rules import (
    RESEND_WINDOW,
    idempotency_key,
    rfc3339,
    unix_seconds,
    unsendable,
    utc_now,
    verdict,
)
from proxy.billing.store import Lane, MeterEvent, UsageStore
from proxy.config import BillingConfig
from proxy.errors import StorageUnavailable
from proxy.logs import log_event

_PAGE = 1000
_LANES = 200  # lanes leased at most by one dispatch
STREAM_BATCH = 100  # https://docs.stripe.com/api/v2/billing-meter-stream/stream/create
IDENTIFIER_MAX = 100  # https://docs.stripe.com/api/billing/meter-event/create

LEASE_S = 60.0  # a worker renews its lanes every third of this; a dead worker's lapse after it


class MeterWorker:
    def __init__(
        self,
        store: UsageStore,
        client: stripe.StripeClient,
        *,
        concurrency: int = 8,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 60.0,
        poll_interval_s: float = 2.0,
        clock: Callable[[], datetime.datetime] = utc_now,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
        stream_above: int | None = None,
        lease_s: float = LEASE_S,
        owner: str | None = None,
        resend_window: datetime.timedelta = RESEND_WINDOW,
    ) -> None:
        self._store = store
        self._resend_window = resend_window
        self._lease = datetime.timedelta(seconds=lease_s)
        # Who holds a lease: unique per worker, readable in the database by an operator.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._held: Counter[Lane] = Counter()  # events of each leased lane not settled yet
        self._client = client
        self._slots = asyncio.Semaphore(concurrency)
        self._backoff = (backoff_base_s, backoff_max_s)
        self._poll_interval_s = poll_interval_s
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._queues: dict[Lane, deque[MeterEvent]] = {}
        self._lanes: dict[Lane, asyncio.Task[None]] = {}
        self._claimed: set[str] = set()
        self._stream_above = stream_above  # None: v1 only
        self._stream = stripe_api.MeterEventStream(client, clock)
        self._batches: set[asyncio.Task[None]] = set()
        self.stats: Counter[str] = Counter()

    @classmethod
    def from_config(
        cls, store: UsageStore, client: stripe.StripeClient, billing: BillingConfig
    ) -> MeterWorker:
        return cls(
            store,
            client,
            concurrency=billing.concurrency,
            backoff_base_s=billing.backoff_base_s,
            backoff_max_s=billing.backoff_max_s,
            poll_interval_s=billing.poll_interval_s,
            stream_above=billing.stream_above,
            lease_s=billing.lease_s,
            resend_window=datetime.timedelta(seconds=billing.resend_window_s),
        )

    async def drain_once(self) -> None:
        """Delivers (or dead-letters) every event undelivered now; returns when all are settled."""
        await self._dispatch()
        while self._lanes or self._batches:
            await asyncio.gather(*self._lanes.values(), *self._batches)

    async def run(self) -> None:
        renewing = asyncio.create_task(self._renew_leases())
        try:
            while True:
                try:
                    await self._dispatch()
                except StorageUnavailable as error:  # the lanes it holds stay held; it comes back
                    log_event("metering_paused", level=logging.WARNING, reason=str(error))
                await asyncio.sleep(self._poll_interval_s)
        finally:
            renewing.cancel()

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self._lease.total_seconds() / 3)
            try:
                await to_thread.run_sync(self._store.renew, self.owner, self._lease_end())
            except StorageUnavailable as error:
                log_event("meter_lease_renewal_failed", level=logging.WARNING, reason=str(error))

    def _lease_end(self) -> str:
        return (self._clock() + self._lease).isoformat(timespec="microseconds")

    async def aclose(self) -> None:
        tasks = [*self._lanes.values(), *self._batches]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _dispatch(self) -> None:
        now = self._clock().isoformat(timespec="microseconds")
        lanes = await to_thread.run_sync(self._store.claim_lanes, self.owner, now, self._lease_end(), _LANES)
        fresh: list[MeterEvent] = []
        for lane in lanes:
            after: tuple[str, str] | None = None
            while rows := await to_thread.run_sync(self._store.pending_in, lane, _PAGE, after):
                fresh += (event for event in rows if event.prediction_id not in self._claimed)
                after = (rows[-1].created_at, rows[-1].prediction_id)
        self._claimed.update(event.prediction_id for event in fresh)
        for event in fresh:
            self._held[event.lane] += 1
        streamable: list[MeterEvent] = []
        for event in fresh:
            if self._stream_above is not None and len(fresh) > self._stream_above and self._streamable(event):
                streamable.append(event)
            else:
                self._enqueue(event)
        for start in range(0, len(streamable), STREAM_BATCH):
            task = asyncio.create_task(self._deliver_batch(streamable[start : start + STREAM_BATCH]))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
        for lane in lanes:  # leased, but nothing left to send: give it back now
            if not self._held[lane]:
                await self._release(lane)

    def _enqueue(self, event: MeterEvent) -> None:
        lane = event.lane
        self._queues.setdefault(lane, deque()).append(event)
        if lane not in self._lanes:
            self._lanes[lane] = asyncio.create_task(self._drain_lane(lane))

    async def _settled(self, events: list[MeterEvent]) -> None:
        """These events no longer need this worker; a lane with none left is given back."""
        self._claimed.difference_update(event.prediction_id for event in events)
        for event in events:
            self._held[event.lane] -= 1
            if self._held[event.lane] <= 0:
                del self._held[event.lane]
                await self._release(event.lane)

    async def _release(self, lane: Lane) -> None:
        with contextlib.suppress(StorageUnavailable):  # if so, the lease runs out by itself
            await to_thread.run_sync(self._store.release, self.owner, lane)

    def _streamable(self, event: MeterEvent) -> bool:
        return (
            len(event.identifier) <= IDENTIFIER_MAX
            and unsendable(event, self._clock(), self._resend_window) is None
        )

    async def _drain_lane(self, lane: Lane) -> None:
        queue = self._queues[lane]
        try:
            while queue:
                await self._deliver(queue[0])
                await self._settled([queue.popleft()])
        finally:
            left = list(queue)
            del self._queues[lane], self._lanes[lane]
            self._claimed.difference_update(event.prediction_id for event in left)
            for event in left:  # canceled: the lease runs out, and another worker takes them
                self._held[event.lane] -= 1

    async def _deliver(self, event: MeterEvent) -> None:
        timestamp = unix_seconds(event.created_at)
        params: MeterEventCreateParams = {
            "event_name": event.event_name,
            "payload": {"stripe_customer_id": event.customer, "value": str(event.value_ms)},
            "identifier": event.identifier,
            "timestamp": timestamp,
        }
        attempts, generation = 0, 0
        while True:
            reason = unsendable(event, self._clock(), self._resend_window)
            if reason is not None:
                await self._dead_letter(event, reason)
                return
            if event.first_attempt_at is None:
                (event,) = await self._attempted([event])
            attempts += 1
            try:
                async with self._slots:
                    self.stats["calls"] += 1
                    await self._client.v1.billing.meter_events.create_async(
                        params, options={"idempotency_key": idempotency_key(event, generation)}
                    )
            except stripe.InvalidRequestError as error:
                answer = verdict(error)
                if answer == "duplicate":
                    await self._delivered(event, attempts, duplicate=True)
                    return
                if answer == "dead":
                    await self._dead_letter(
                        event, f"Stripe refused it ({error.http_status} {error.code}): {error.user_message}"
                    )
                    return
                self._note_retry(event, attempts, error)  # a clock ahead of Stripe's: later
            except stripe.IdempotencyError as error:
                await self._dead_letter(
                    event, f"idempotency key reused with other parameters: {error.user_message}"
                )
                return
            except stripe.StripeError as error:  # 5xx, 409, 429, 401/403, timeouts, connections
                if isinstance(error, stripe.APIError) and (error.http_status or 0) >= 500:
                    generation += 1
                self._note_retry(event, attempts, error)
            except Exception as error:
                self._note_retry(event, attempts, error)
            else:
                await self._delivered(event, attempts, duplicate=False)
                return
            base, ceiling = self._backoff
            await self._sleep(self._rng.uniform(0, min(ceiling, base * 2 ** min(attempts - 1, 30))))

    async def _attempted(self, events: list[MeterEvent]) -> list[MeterEvent]:
        """The events with their first attempt recorded (now, unless a worker tried before)."""
        at = self._clock().isoformat(timespec="microseconds")
        first = await to_thread.run_sync(self._store.mark_attempted, [e.prediction_id for e in events], at)
        return [dataclasses.replace(e, first_attempt_at=first[e.prediction_id]) for e in events]

    async def _deliver_batch(self, batch: list[MeterEvent]) -> None:
        events = [
            {
                "event_name": event.event_name,
                "identifier": event.identifier,
                "payload": {"stripe_customer_id": event.customer, "value": str(event.value_ms)},
                "timestamp": rfc3339(unix_seconds(event.created_at)),
            }
            for event in batch
        ]
        attempts, expired, handed_over = 0, 0, False
        try:
            batch = await self._attempted(batch)
            while True:
                if any(unsendable(event, self._clock(), self._resend_window) for event in batch):
                    for event in batch:  # each goes through v1, which dead-letters it
                        self._enqueue(event)
                    handed_over = True
                    return
                attempts += 1
                try:
                    async with self._slots:
                        self.stats["calls"] += 1
                        self.stats["stream_calls"] += 1
                        await self._stream.send(events)
                except stripe.TemporarySessionExpiredError:
                    # The stream dropped its session; the next try opens a new one, at once the
                    # first time (a clock skew), with backoff if Stripe keeps saying so.
                    self.stats["sessions_expired"] += 1
                    expired += 1
                    if expired == 1:
                        continue
                    self._note_retry(batch[0], attempts, stripe.TemporarySessionExpiredError())
                except (stripe.InvalidRequestError, stripe.IdempotencyError) as error:
                    # The call as a whole was refused (not its events: those are checked later).
                    # Nothing was stored; each event goes through v1 for Stripe's own answer.
                    log_event(
                        "meter_stream_refused",
                        level=logging.ERROR,
                        events=len(batch),
                        status=error.http_status,
                        error=error.user_message,
                    )
                    for event in batch:
                        self._enqueue(event)
                    handed_over = True  # the lanes own these events and their claims now
                    return
                except Exception as error:
                    self._note_retry(batch[0], attempts, error)
                else:
                    await self._delivered_all(batch, attempts)
                    return
                base, ceiling = self._backoff
                await self._sleep(self._rng.uniform(0, min(ceiling, base * 2 ** min(attempts - 1, 30))))
        finally:
            if not handed_over:
                await self._settled(batch)

    async def _delivered_all(self, batch: list[MeterEvent], attempts: int) -> None:
        at = self._clock().isoformat(timespec="microseconds")

        await to_thread.run_sync(self._store.mark_delivered, [event.prediction_id for event in batch], at)
        self.stats["delivered"] += len(batch)
        for event in batch:
            _log_delivered(event, attempts, via="v2.billing.meter_event_stream")

    async def _delivered(self, event: MeterEvent, attempts: int, *, duplicate: bool) -> None:
        at = self._clock().isoformat(timespec="microseconds")
        await to_thread.run_sync(self._store.mark_delivered, [event.prediction_id], at)
        self.stats["duplicates" if duplicate else "delivered"] += 1
        _log_delivered(event, attempts, already_at_stripe=duplicate)

    async def _dead_letter(self, event: MeterEvent, reason: str) -> None:
        at = self._clock().isoformat(timespec="microseconds")
        await to_thread.run_sync(self._store.dead_letter, event.prediction_id, reason, at)
        self.stats["dead_lettered"] += 1
        log_event(
            "meter_event_dead_lettered",
            level=logging.ERROR,
            prediction_id=event.prediction_id,
            customer=event.customer,
            event_name=event.event_name,
            value_ms=event.value_ms,
            reason=reason,
        )

    def _note_retry(self, event: MeterEvent, attempts: int, error: Exception) -> None:
        self.stats["retries"] += 1
        # Powers of two only: an outage of Stripe must not flood the log with a line per try.
        if attempts & (attempts - 1) == 0:
            log_event(
                "meter_event_retrying",
                level=logging.WARNING,
                prediction_id=event.prediction_id,
                customer=event.customer,
                attempts=attempts,
                error=type(error).__name__,
                status=getattr(error, "http_status", None),
            )


def _log_delivered(event: MeterEvent, attempts: int, **how: Any) -> None:
    log_event(
        "meter_event_delivered",
        prediction_id=event.prediction_id,
        customer=event.customer,
        event_name=event.event_name,
        value_ms=event.value_ms,
        attempts=attempts,
        **how,
    )
