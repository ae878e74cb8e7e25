"""Predictions across Ray Serve replicas: one directory actor knows every replica's predictions.

Each replica still runs its own predictions (its store, its batchers) and publishes every change of
one to the `PredictionDirectory`, a named async actor that `inference.ray_serve` starts beside the
deployment. A GET for an id that the replica which received it does not have is answered from the
directory's copy. A cancel for such an id goes to the directory, which hands it to the owning
replica: that replica waits on the directory for cancels (one awaiting actor call, no polling) and
cancels through its normal path, so a queued prediction never runs and a running one's result is
discarded.

    replica A ──publish(records)──▶ PredictionDirectory ◀──get / cancel── replica B
        ▲                               │
        └────── next_cancels(A) ◀───────┘
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import ray
from ray.actor import ActorHandle

from inference.config import Settings
from inference.errors import Unavailable
from inference.predictions import TERMINAL

log = logging.getLogger("inference")
DIRECTORY = "prediction-directory"
NAMESPACE = "modelfolio"
CANCEL_WAIT_S = 10.0  # how long a cancel waits for the owning replica to carry it out
_CALL_TIMEOUT_S = 15.0  # the longest a request waits for the directory


def _rank(status: str) -> int:
    return 2 if status in TERMINAL else 1 if status == "processing" else 0


@dataclass
class _Entry:
    owner: str
    record: dict[str, Any]
    changed: float  # monotonic


class PredictionDirectory:
    """The latest record of every replica's predictions, kept `ttl_s` after their last change and
    at most `max_records` of them (the least recently changed go first), as each replica keeps its
    own; and a mailbox of cancels per replica.

    Runs as an async Ray actor: every method is a coroutine on its one event loop, so no locks.
    Plain Python otherwise, so it is tested without Ray."""

    def __init__(self, ttl_s: float, max_records: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._max_records = max_records
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently changed first
        self._mailboxes: dict[str, asyncio.Queue[str | None]] = {}
        self._answers: dict[str, list[asyncio.Future[dict[str, Any] | None]]] = {}

    async def publish(self, owner: str, records: list[dict[str, Any]]) -> None:
        now = self._clock()
        for record in records:
            entry = self._entries.get(record["id"])
            # Calls to an async actor may run out of order: never step a prediction back.
            if entry is not None and _rank(entry.record["status"]) > _rank(record["status"]):
                continue
            self._entries[record["id"]] = _Entry(owner, record, now)
            self._entries.move_to_end(record["id"])
        self._expire(now)

    async def get(self, prediction_id: str) -> dict[str, Any] | None:
        self._expire(self._clock())
        entry = self._entries.get(prediction_id)
        return None if entry is None else entry.record

    async def cancel(self, prediction_id: str) -> dict[str, Any] | None:
        """Has the owning replica cancel the prediction; its record afterwards. Raises
        TimeoutError if the owner does not answer within CANCEL_WAIT_S (it has died)."""
        self._expire(self._clock())
        entry = self._entries.get(prediction_id)
        if entry is None or entry.record["status"] in TERMINAL:
            return None if entry is None else entry.record
        answer: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._answers.setdefault(prediction_id, []).append(answer)
        self._mailbox(entry.owner).put_nowait(prediction_id)
        try:
            return await asyncio.wait_for(answer, CANCEL_WAIT_S)
        finally:
            waiting = self._answers.get(prediction_id, [])
            if answer in waiting:
                waiting.remove(answer)
            if not waiting:
                self._answers.pop(prediction_id, None)

    async def next_cancels(self, owner: str) -> list[str] | None:
        """Waits for cancels of `owner`'s predictions and returns their ids; None once it left."""
        mailbox = self._mailbox(owner)
        ids = [await mailbox.get()]
        while not mailbox.empty():
            ids.append(mailbox.get_nowait())
        return None if None in ids else [i for i in ids if i is not None]

    async def answer(self, owner: str, prediction_id: str, record: dict[str, Any] | None) -> None:
        """The owner's record of a prediction it was asked to cancel (None: it had none)."""
        if record is not None:
            await self.publish(owner, [record])
        for waiting in self._answers.pop(prediction_id, []):
            if not waiting.done():
                waiting.set_result(record)

    async def leave(self, owner: str) -> None:
        # Ends the owner's next_cancels call, even one that arrives after this.
        self._mailbox(owner).put_nowait(None)

    def _mailbox(self, owner: str) -> asyncio.Queue[str | None]:
        return self._mailboxes.setdefault(owner, asyncio.Queue())

    def _expire(self, now: float) -> None:
        cutoff = now - self._ttl_s
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if len(self._entries) <= self._max_records and oldest.changed >= cutoff:
                return
            self._entries.popitem(last=False)


def start_directory(settings: Settings) -> ActorHandle:
    """Starts the directory for a deployment; it lives as long as the handle returned (the
    `python -m inference.ray_serve` process) and takes no CPU from the replicas."""
    actor = ray.remote(PredictionDirectory).options(name=DIRECTORY, namespace=NAMESPACE, num_cpus=0)
    handle = cast(ActorHandle, actor.remote(settings.prediction_ttl_s, settings.max_records))
    ray.get(handle.__ray_ready__.remote())
    return handle


class RayRecords:
    """A replica's side of the directory (the `RemoteRecords` of inference.predictions)."""

    def __init__(self) -> None:
        self._owner = uuid.uuid4().hex
        self._directory: ActorHandle | None = None
        self._pending: list[dict[str, Any]] = []
        self._sending: set[asyncio.Future[Any]] = set()
        self._listener: asyncio.Task[None] | None = None

    async def open(self, cancel: Callable[[str], dict[str, Any] | None]) -> None:
        self._directory = await asyncio.to_thread(ray.get_actor, DIRECTORY, namespace=NAMESPACE)
        self._listener = asyncio.create_task(self._listen(cancel), name="prediction-directory-cancels")

    def publish(self, record: dict[str, Any]) -> None:
        # A batch finishes many predictions at once: they travel in one actor call.
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._send)
        self._pending.append(record)

    async def synced(self) -> None:
        self._send()
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=_CALL_TIMEOUT_S)

    async def get(self, prediction_id: str) -> dict[str, Any] | None:
        return await self._ask(self._actor.get.remote(prediction_id))

    async def cancel(self, prediction_id: str) -> dict[str, Any] | None:
        return await self._ask(self._actor.cancel.remote(prediction_id))

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._directory is not None:
            await self.synced()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._directory.leave.remote(self._owner), _CALL_TIMEOUT_S)

    @property
    def _actor(self) -> ActorHandle:
        if self._directory is None:
            raise Unavailable("this replica is still starting", retry_after=1)
        return self._directory

    def _send(self) -> None:
        if not self._pending:
            return
        records, self._pending = self._pending, []
        sending: asyncio.Future[Any] = asyncio.ensure_future(self._actor.publish.remote(self._owner, records))
        self._sending.add(sending)
        sending.add_done_callback(self._sent)

    def _sent(self, sending: asyncio.Future[Any]) -> None:
        self._sending.discard(sending)
        if not sending.cancelled() and sending.exception() is not None:
            log.warning("the prediction directory missed an update: %r", sending.exception())

    async def _ask(self, call: Awaitable[dict[str, Any] | None]) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(call, _CALL_TIMEOUT_S)
        except Exception as exc:
            log.warning("the prediction directory did not answer: %r", exc)
            raise Unavailable("the prediction's replica or the prediction directory did not answer; "
                              "retry shortly", retry_after=1) from exc

    async def _listen(self, cancel: Callable[[str], dict[str, Any] | None]) -> None:
        while True:
            try:
                ids = await self._actor.next_cancels.remote(self._owner)
            except Exception:
                log.exception("lost the prediction directory: cancels sent to other replicas "
                              "no longer reach this one's predictions")
                return
            if ids is None:
                return
            for prediction_id in ids:
                try:
                    record = cancel(prediction_id)
                except Exception:
                    log.exception("cancel of %s, sent by another replica, failed", prediction_id)
                    record = None
                self._actor.answer.remote(self._owner, prediction_id, record)
