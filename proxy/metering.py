"""Delivers the ledger's meter outbox to Stripe as Billing Meter events, exactly once.

The request path only writes the outbox (proxy/billing.py); this worker drains it. Exactly once
rests on the event `identifier` = prediction id: Stripe refuses a second event with it, and that
refusal means "already delivered". Every retriable failure (5xx, 429, timeouts, broken
connections) is retried forever, with exponential backoff and full jitter, in its own lane per
(customer, meter): Stripe allows one call in flight per customer and meter, and one customer's
trouble must never hold back another's events. Events Stripe can never accept (older than its
35-day window, or any other 400) go to the dead-letter table with an error log line.

A backlog larger than `stream_above` goes through Stripe's v2 meter event stream instead, 100
events a call over all lanes (the stream has no per-customer limit). The identifier still makes a
retried batch harmless, and rows are marked delivered only after their call succeeded. The stream
validates asynchronously, so it takes only events that pass the checks v1 would answer at once
(the window, the identifier's length); the rest keep going one by one through v1.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import stripe
from anyio import to_thread

from proxy import stripe_api
from proxy.config import BillingConfig, Config
from proxy.ledger import Ledger, MeterEvent
from proxy.logs import log_event

STRIPE_WINDOW = datetime.timedelta(days=35)  # https://docs.stripe.com/api/billing/meter-event/create
DUPLICATE = "An event already exists with identifier"
_PAGE = 1000
STREAM_BATCH = 100  # https://docs.stripe.com/api/v2/billing-meter-stream/stream/create
IDENTIFIER_MAX = 100  # https://docs.stripe.com/api/billing/meter-event/create

Lane = tuple[str, str]  # (customer, event_name)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def unix_seconds(iso: str) -> int:
    moment = datetime.datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp())


def rfc3339(unix: int) -> str:
    """v2 takes timestamps as RFC 3339 strings; the same whole second as v1's Unix timestamp."""
    moment = datetime.datetime.fromtimestamp(unix, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def idempotency_key(prediction_id: str, generation: int) -> str:
    # Stripe replays a key's first answer for 24 h, 5xx included: after a 5xx the next try needs
    # a new key (the identifier still stops a second event); otherwise the key stays the same.
    suffix = f"-r{generation}" if generation else ""
    return f"modelfolio-meter-{prediction_id}{suffix}"


class MeterWorker:
    def __init__(
        self,
        ledger: Ledger,
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
    ) -> None:
        self._ledger = ledger
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
    def from_config(cls, ledger: Ledger, client: stripe.StripeClient, billing: BillingConfig) -> MeterWorker:
        return cls(
            ledger,
            client,
            concurrency=billing.concurrency,
            backoff_base_s=billing.backoff_base_s,
            backoff_max_s=billing.backoff_max_s,
            poll_interval_s=billing.poll_interval_s,
            stream_above=billing.stream_above,
        )

    async def drain_once(self) -> None:
        """Delivers (or dead-letters) every event undelivered now; returns when all are settled."""
        await self._dispatch()
        while self._lanes or self._batches:
            await asyncio.gather(*self._lanes.values(), *self._batches)

    async def run(self) -> None:
        while True:
            await self._dispatch()
            await asyncio.sleep(self._poll_interval_s)

    async def aclose(self) -> None:
        tasks = [*self._lanes.values(), *self._batches]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _dispatch(self) -> None:
        fresh: list[MeterEvent] = []
        after: tuple[str, str] | None = None
        while rows := await to_thread.run_sync(self._ledger.undelivered_meter_events, _PAGE, after):
            fresh += (event for event in rows if event.prediction_id not in self._claimed)
            after = (rows[-1].created_at, rows[-1].prediction_id)
        self._claimed.update(event.prediction_id for event in fresh)
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

    def _enqueue(self, event: MeterEvent) -> None:
        lane = (event.customer, event.event_name)
        self._queues.setdefault(lane, deque()).append(event)
        if lane not in self._lanes:
            self._lanes[lane] = asyncio.create_task(self._drain_lane(lane))

    def _streamable(self, event: MeterEvent) -> bool:
        moment = datetime.datetime.fromtimestamp(unix_seconds(event.created_at), datetime.UTC)
        return len(event.prediction_id) <= IDENTIFIER_MAX and self._clock() - moment <= STRIPE_WINDOW

    async def _drain_lane(self, lane: Lane) -> None:
        queue = self._queues[lane]
        try:
            while queue:
                await self._deliver(queue[0])
                self._claimed.discard(queue.popleft().prediction_id)
        finally:
            self._claimed.difference_update(event.prediction_id for event in queue)
            del self._queues[lane], self._lanes[lane]

    async def _deliver(self, event: MeterEvent) -> None:
        timestamp = unix_seconds(event.created_at)
        params: dict[str, Any] = {
            "event_name": event.event_name,
            "payload": {"stripe_customer_id": event.customer, "value": str(event.value_ms)},
            "identifier": event.prediction_id,
            "timestamp": timestamp,
        }
        attempts, generation = 0, 0
        while True:
            if self._clock() - datetime.datetime.fromtimestamp(timestamp, datetime.UTC) > STRIPE_WINDOW:
                await self._dead_letter(event, "older than Stripe's 35-day window for meter events")
                return
            attempts += 1
            try:
                async with self._slots:
                    self.stats["calls"] += 1
                    await self._client.v1.billing.meter_events.create_async(
                        params, options={"idempotency_key": idempotency_key(event.prediction_id, generation)}
                    )
            except stripe.InvalidRequestError as error:
                if DUPLICATE in str(error.user_message or error):
                    await self._delivered(event, attempts, duplicate=True)
                else:
                    await self._dead_letter(
                        event, f"Stripe refused it ({error.http_status}): {error.user_message}"
                    )
                return
            except stripe.IdempotencyError as error:
                await self._dead_letter(
                    event, f"idempotency key reused with other parameters: {error.user_message}"
                )
                return
            except stripe.StripeError as error:  # 5xx, 409, 429, 401/403, timeouts, connections
                if isinstance(error, stripe.APIError) and (error.http_status or 0) >= 500:
                    generation += 1
                self._note_retry(event, attempts, error)
            except Exception as error:  # noqa: BLE001 -- a bug must not stop the lane; the event stays queued
                self._note_retry(event, attempts, error)
            else:
                await self._delivered(event, attempts, duplicate=False)
                return
            base, ceiling = self._backoff
            await self._sleep(self._rng.uniform(0, min(ceiling, base * 2 ** min(attempts - 1, 30))))

    async def _deliver_batch(self, batch: list[MeterEvent]) -> None:
        events = [
            {
                "event_name": event.event_name,
                "identifier": event.prediction_id,
                "payload": {"stripe_customer_id": event.customer, "value": str(event.value_ms)},
                "timestamp": rfc3339(unix_seconds(event.created_at)),
            }
            for event in batch
        ]
        attempts, expired, handed_over = 0, 0, False
        try:
            while True:
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
                except Exception as error:  # noqa: BLE001 -- 5xx, 429, timeouts, connections, bugs
                    self._note_retry(batch[0], attempts, error)
                else:
                    await self._delivered_all(batch, attempts)
                    return
                base, ceiling = self._backoff
                await self._sleep(self._rng.uniform(0, min(ceiling, base * 2 ** min(attempts - 1, 30))))
        finally:
            if not handed_over:
                self._claimed.difference_update(event.prediction_id for event in batch)

    async def _delivered_all(self, batch: list[MeterEvent], attempts: int) -> None:
        at = self._clock().isoformat(timespec="microseconds")

        def mark() -> None:
            for event in batch:
                self._ledger.mark_meter_event_delivered(event.prediction_id, at)

        await to_thread.run_sync(mark)
        self.stats["delivered"] += len(batch)
        for event in batch:
            _log_delivered(event, attempts, via="v2.billing.meter_event_stream")

    async def _delivered(self, event: MeterEvent, attempts: int, *, duplicate: bool) -> None:
        at = self._clock().isoformat(timespec="microseconds")
        await to_thread.run_sync(self._ledger.mark_meter_event_delivered, event.prediction_id, at)
        self.stats["duplicates" if duplicate else "delivered"] += 1
        _log_delivered(event, attempts, already_at_stripe=duplicate)

    async def _dead_letter(self, event: MeterEvent, reason: str) -> None:
        at = self._clock().isoformat(timespec="microseconds")
        await to_thread.run_sync(self._ledger.dead_letter_meter_event, event.prediction_id, reason, at)
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


@contextlib.asynccontextmanager
async def metering(config: Config, ledger: Ledger) -> AsyncIterator[MeterWorker | None]:
    """For the proxy's lifespan: the worker runs only when STRIPE_SECRET_KEY is set."""
    key = config.secrets.stripe_secret_key
    if not key:
        log_event(
            "metering_disabled",
            level=logging.WARNING,
            reason="STRIPE_SECRET_KEY is not set; meter events wait in the ledger's outbox",
        )
        yield None
        return
    connection = stripe_api.connect(key, config.billing)
    worker = MeterWorker.from_config(ledger, connection.client, config.billing)
    task = asyncio.create_task(worker.run())
    log_event("metering_started", stripe_api_base=config.billing.stripe_api_base)
    try:
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.aclose()
        await connection.aclose()


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
