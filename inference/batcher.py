"""Dynamic batching: one bounded queue and one worker per model.

Greedy: whenever the model is free, everything queued (up to max_batch_size) runs as one batch,
so a lone request never waits for company. An optional window (window_ms) lets a batch fill a
little more when the queue is non-empty but short; it is off by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from inference import files
from inference.errors import QueueFull
from inference.loader import LoadedModel
from inference.metrics import Metrics
from inference.predictions import Prediction, PredictionStore

log = logging.getLogger("inference")
_AS_GIVEN: Any = object()  # a Job made without `prepared` runs its inputs as they are


@dataclass(eq=False)
class Job:
    prediction: Prediction
    inputs: dict[str, Any]  # validated and resolved: what predict() takes
    deadline: float | None = None  # time.monotonic() after which it must not start
    queued_at: float = field(default_factory=time.monotonic)
    prepared: Any = _AS_GIVEN  # what the model runs: LoadedModel.prepare(inputs), made off the loop

    def __post_init__(self) -> None:
        if self.prepared is _AS_GIVEN:
            self.prepared = self.inputs


class Batcher:
    def __init__(
        self,
        model: LoadedModel,
        store: PredictionStore,
        metrics: Metrics,
        on_start: Callable[[Prediction], None] = lambda p: None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        """`executor`: the one thread the model runs on; the server shares one among all its
        models (see Models). Without it, the batcher starts and owns a thread of its own."""
        self.model = model
        self._on_start = on_start
        self._store = store
        self._metrics = metrics
        self._max_batch = max(1, model.manifest.max_batch_size)
        self._max_queue = max(1, model.manifest.max_queue)
        self._window_s = model.manifest.batch_window_ms / 1000
        self._queue: deque[Job] = deque()
        self._wakeup = asyncio.Event()
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix=f"model-{model.manifest.name}")
        self._owns_executor = executor is None
        # Batches handed to the model's thread, oldest first: the one it runs, and at most one
        # full batch waiting behind it, so the thread never idles while the loop is busy.
        self._in_flight: deque[tuple[list[Job], Future[list[tuple[Any, float]]]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._reserved = 0  # requests that chose this batcher and are still decoding their input
        self._changed = asyncio.Event()  # set whenever work ends: what a draining stop waits on

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def warm_up(self, inputs: list[dict[str, Any]]) -> tuple[Any, float] | None:
        """Runs `inputs` once on the model's own thread, where predictions will run: the first
        forward pass pays one-off costs (thread pools, allocations, kernel choice) that no
        customer should be billed for. Returns the first input's (output or exception, seconds)
        from one more run once warm: the model's default example, timed as a caller would see."""
        loop = asyncio.get_running_loop()
        prepared = [await asyncio.to_thread(self.model.prepare, one) for one in inputs]
        for one in prepared:  # one at a time, as a lone visitor's request will run
            await loop.run_in_executor(self._executor, self.model.run, [one])
        for size in self.model.manifest.batch_buckets if prepared else ():
            await loop.run_in_executor(self._executor, self.model.run, prepared[:1] * size)
        if not prepared:
            return None
        return (await loop.run_in_executor(self._executor, self.model.run, prepared[:1]))[0]

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name=f"batcher-{self.model.ref}")

    @contextlib.contextmanager
    def reserve(self) -> Iterator[None]:
        self._reserved += 1
        try:
            yield
        finally:
            self._reserved -= 1
            self._changed.set()

    async def stop(self, *, drain: bool = False) -> None:
        """Stops the worker; with `drain`, only once every queued, running and reserved request
        has finished (a retired version drops nothing)."""
        while drain and (self._queue or self._in_flight or self._reserved):
            self._changed.clear()
            await self._changed.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, future in self._in_flight:  # the running batch ends first (one not started never will)
            future.cancel()
            await asyncio.wait([asyncio.wrap_future(future)])
        if self._owns_executor:
            await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        while self._in_flight:
            batch, _ = self._in_flight.popleft()
            for job in batch:
                self._finish(job, "failed", len(batch), error="the server shut down while this ran")
                files.cleanup(job.inputs)
        while self._queue:
            job = self._queue.popleft()
            self._finish(job, "failed", 0, error="the server shut down before this ran")
            files.cleanup(job.inputs)

    def check_capacity(self) -> None:
        if len(self._queue) >= self._max_queue:
            raise QueueFull(
                f"{self.model.ref} has {len(self._queue)} predictions queued, its limit; retry shortly",
                retry_after=1,
            )

    def submit(self, job: Job) -> None:
        self.check_capacity()
        self._queue.append(job)
        self._wakeup.set()

    async def _work(self) -> None:
        while True:
            if self._queue and (not self._in_flight or self._full_batch_waiting()):
                if self._window_s and len(self._queue) < self._max_batch:
                    await asyncio.sleep(self._window_s)
                batch = self._take()
                if batch:
                    self._hand_over(batch)
                else:  # all it found was dropped (canceled, or past its deadline): that is a change
                    self._changed.set()
                continue
            if not self._in_flight:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch, future = self._in_flight[0]
            try:
                results = await asyncio.wrap_future(future)
            except Exception as exc:
                log.exception("batch failed on %s", self.model.ref)
                results = [(exc, 0.0)] * len(batch)
            self._in_flight.popleft()
            for job, (output, seconds) in zip(batch, results, strict=True):
                self._settle(job, output, seconds, len(batch))
            self._changed.set()

    def _full_batch_waiting(self) -> bool:
        """Whether to queue a batch behind the running one now: only a full one, and only one.
        A partial batch waits instead, growing while the model is busy (greedy batching)."""
        largest = min(self._max_batch, self.model.batch_cap)
        return len(self._in_flight) == 1 and len(self._queue) >= largest

    def _hand_over(self, batch: list[Job]) -> None:
        for job in batch:
            job.prediction.start()
            self._on_start(job.prediction)
        future = self._executor.submit(self.model.run, [job.prepared for job in batch])
        self._in_flight.append((batch, future))

    def _take(self) -> list[Job]:
        batch: list[Job] = []
        now = time.monotonic()
        largest = min(self._max_batch, self.model.batch_cap)  # lower after the device ran out of memory
        while self._queue and len(batch) < largest:
            job = self._queue.popleft()
            if job.prediction.terminal:  # canceled while queued
                files.cleanup(job.inputs)
            elif job.deadline is not None and now > job.deadline:
                # Computing it would be wasted: nobody is waiting for the answer any more.
                files.cleanup(job.inputs)
                waited = now - job.queued_at
                self._finish(
                    job, "failed", 0, error=f"deadline passed after {waited:.1f} s in the queue; it never ran"
                )
            else:
                batch.append(job)
        if batch:
            self._metrics.batch_size.labels(self.model.ref).observe(len(batch))
        return batch

    def _settle(self, job: Job, output: Any, seconds: float, batch_size: int) -> None:
        files.cleanup(job.inputs)
        if isinstance(output, Exception):
            self._finish(
                job, "failed", batch_size, error=str(output) or type(output).__name__, predict_time=seconds
            )
        else:
            self._finish(job, "succeeded", batch_size, output=output, predict_time=seconds)

    def _finish(self, job: Job, status: str, batch_size: int, **result: Any) -> None:
        p = job.prediction
        if not self._store.finish(p, status, **result):
            return  # canceled meanwhile: the result is discarded
        ref = self.model.ref
        self._metrics.predictions.labels(ref, status).inc()
        self._metrics.latency_seconds.labels(ref).observe(time.monotonic() - job.queued_at)
        if p.predict_time is not None:
            self._metrics.predict_seconds.labels(ref).observe(p.predict_time)
        log.info(
            "prediction",
            extra={
                "fields": {
                    "prediction_id": p.id,
                    "model": p.model,
                    "status": status,
                    "error": p.error,
                    "predict_time_ms": None if p.predict_time is None else round(p.predict_time * 1000, 3),
                    "queue_ms": round((time.monotonic() - job.queued_at) * 1000, 3),
                    "batch_size": batch_size,
                }
            },
        )
