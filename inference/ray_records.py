"""What Ray Serve replicas share: one directory actor holds every replica's predictions and uploads.

Each replica still runs its own predictions (its store, its batchers) and publishes every change of
one to the `PredictionDirectory`, a named async actor (the replica's side is
inference/ray_replica.py). A GET for an id that the replica which received it does not have is
answered from the directory's copy; a cancel goes to the directory, which hands it to the owning
replica. A prediction still `starting` is kept whole (its input too) in Ray's object store, owned
by the directory, and an uploaded file likewise: the directory reads either out to the replica
that needs it (a replica that read such an object itself, by a borrowed reference, stalled now and
then), and the object is freed as soon as the directory lets go of it (the prediction started or
ended, the file expired or was deleted).

Each replica renews a lease (`heartbeat`) every second. One not heard from for `lease_s` seconds,
or that left, is gone: its queued predictions are handed to another replica whose models have
loaded, once (a second loss fails them), and its running ones fail with an error that says so. A
failed prediction is never billed; a gone replica that turns up again is told so and stops, so
nothing gets two answers.

    replica A ──publish / heartbeat──▶ PredictionDirectory ◀──get / cancel / files── replica B
        ▲                                   │
        └──── next_orders(A): cancel, run ◀─┘
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from inference.predictions import TERMINAL

log = logging.getLogger("inference")
DIRECTORY = "prediction-directory"
NAMESPACE = "modelfolio"
LEASE_S = 10.0  # a replica not heard from for this long is taken for gone
CANCEL_WAIT_S = 15.0  # how long a cancel waits for the owning replica: past a lease, so a gone one is settled
ORPHAN_WAIT_S = 120.0  # how long a handed-over prediction waits for a ready replica (a GPU one loads slowly)
MAX_ATTEMPTS = 2  # the replica that took the create, and one more
READ_TIMEOUT_S = 10.0  # the longest the directory reads an object it put (under a replica's 20 s wait for it)

STOPPED_WHILE_RUNNING = (
    "the replica running this prediction stopped before it finished; it was not billed, "
    "and creating it again is safe"
)
STOPPED_TWICE = (
    "the replica holding this prediction stopped before it ran, and so did the one it was "
    "handed to; it was not billed"
)
NO_REPLICA = (
    "the replica holding this prediction stopped and no other took it over in time; it was not billed"
)


def _rank(status: str) -> int:
    return 2 if status in TERMINAL else 1 if status == "processing" else 0


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def _object_ref(value: Any) -> Any:
    import ray

    # Put by the directory, so that the object outlives the replica that sent it.
    return await asyncio.to_thread(ray.put, value)


async def _object_value(ref: Any) -> Any:
    # Bounded: an object that never arrives fails its read, and does not hold up the caller's
    # other orders for good.
    return await asyncio.wait_for(ref, READ_TIMEOUT_S)


@dataclass
class _Entry:
    owner: str
    record: dict[str, Any]
    changed: float  # monotonic
    spec: list[Any] | None = None  # [ref] to the whole prediction, while it is `starting`
    attempts: int = 1  # replicas it has been given to


@dataclass
class _File:
    upload: Any  # inference.uploads.Upload
    content: list[Any]  # [ref] to its bytes
    expires: float  # monotonic


class PredictionDirectory:
    """The latest record of every replica's predictions, kept `ttl_s` after their last change and
    at most `max_records` of them (the least recently changed go first), as each replica keeps its
    own; the replicas' leases and a mailbox of orders for each; and the uploaded files.

    Runs as an async Ray actor: every method is a coroutine on its one event loop, so no locks.
    Plain Python otherwise (`keep` wraps a value in a reference, `reap_every_s=None` leaves reaping
    to the caller), so it is tested without Ray."""

    def __init__(
        self,
        ttl_s: float,
        max_records: int,
        *,
        lease_s: float = LEASE_S,
        max_files: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        keep: Callable[[Any], Awaitable[Any]] = _object_ref,
        read: Callable[[Any], Awaitable[Any]] = _object_value,
        reap_every_s: float | None = 1.0,
    ) -> None:
        self._clock = clock
        self._keep = keep
        self._read = read
        self._ttl_s = ttl_s
        self._max_records = max_records
        self._lease_s = lease_s
        self._max_files = max_files
        self._reap_every_s = reap_every_s
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently changed first
        self._mailboxes: dict[str, asyncio.Queue[dict[str, Any] | None]] = {}
        self._answers: dict[str, list[asyncio.Future[dict[str, Any] | None]]] = {}
        self._live: dict[str, float] = {}  # replica -> when last heard from
        self._ready: set[str] = set()  # live replicas whose models have loaded
        self._gone: set[str] = set()
        self._orphans: dict[str, float] = {}  # prediction id -> since when it waits for a replica
        self._handed: dict[str, int] = {}  # replica -> predictions handed to it
        self._files: OrderedDict[str, _File] = OrderedDict()
        self._reaper: asyncio.Task[None] | None = None

    # --- replicas ---------------------------------------------------------------------------------

    async def join(self, owner: str) -> None:
        if self._reaper is None and self._reap_every_s is not None:
            self._reaper = asyncio.create_task(self._reap_forever(self._reap_every_s))
        self._live[owner] = self._clock()

    async def heartbeat(self, owner: str, ready: bool) -> bool:
        """Renews `owner`'s lease; False once it was taken for gone (it must stop). `ready`: its
        models have loaded, so it may be handed other replicas' predictions."""
        if owner in self._gone:
            return False
        self._live[owner] = self._clock()
        if ready and owner not in self._ready:
            self._ready.add(owner)
            self._hand_orphans()
        return True

    async def leave(self, owner: str) -> None:
        """A replica that stops on purpose: what it still holds is handed over as if it had died."""
        self._drop(owner, "left")

    async def next_orders(self, owner: str) -> list[dict[str, Any]] | None:
        """Waits for orders for `owner` ({"cancel": id} or {"run": id, "spec": the prediction});
        None once it is gone."""
        mailbox = self._mailbox(owner)
        orders = [await mailbox.get()]
        while not mailbox.empty():
            orders.append(mailbox.get_nowait())
        if None in orders:
            return None
        sent = [await self._with_spec(order) for order in orders if order is not None]
        return [order for order in sent if order is not None]

    async def _with_spec(self, order: dict[str, Any]) -> dict[str, Any] | None:
        """A run order with the prediction itself, read here where it was put (see file_content);
        None, and the prediction failed, if it cannot be read."""
        if "spec" not in order:
            return order
        try:
            return {**order, "spec": await self._read(order["spec"][0])}
        except Exception as exc:
            log.warning("could not read handed-over prediction %s: %r", order["run"], exc)
            if order["run"] in self._entries:
                self._settle(
                    order["run"], "failed", f"it was handed to another replica but could not be read: {exc!r}"
                )
            return None

    async def reap(self) -> None:
        now = self._clock()
        for owner, heard in list(self._live.items()):
            if now - heard > self._lease_s:
                self._drop(owner, f"not heard from for {now - heard:.1f} s")
        for prediction_id, since in list(self._orphans.items()):
            if now - since > ORPHAN_WAIT_S:
                self._settle(prediction_id, "failed", NO_REPLICA)

    # --- predictions ------------------------------------------------------------------------------

    async def publish(
        self, owner: str, records: list[dict[str, Any]], specs: dict[str, Any] | None = None
    ) -> bool:
        """Records `owner`'s changes; `specs` holds the whole of each prediction still `starting`
        (by id), to hand it to another replica should this one stop. False if `owner` is gone."""
        if owner in self._gone:
            return False
        kept = {prediction_id: [await self._keep(spec)] for prediction_id, spec in (specs or {}).items()}
        now = self._clock()
        self._live[owner] = now
        for record in records:
            entry = self._entries.get(record["id"])
            # Calls to an async actor may run out of order: never step a prediction back, and an
            # ended one never changes.
            if entry is not None and (
                entry.record["status"] in TERMINAL or _rank(entry.record["status"]) > _rank(record["status"])
            ):
                continue
            if entry is None:
                entry = self._entries[record["id"]] = _Entry(owner, record, now)
            entry.owner, entry.record, entry.changed = owner, record, now
            if record["status"] != "starting":
                entry.spec = None
            elif record["id"] in kept:
                entry.spec = kept[record["id"]]
            self._entries.move_to_end(record["id"])
        self._expire(now)
        return True

    async def get(self, prediction_id: str) -> dict[str, Any] | None:
        self._expire(self._clock())
        entry = self._entries.get(prediction_id)
        return None if entry is None else entry.record

    async def cancel(self, prediction_id: str) -> dict[str, Any] | None:
        """Has the owning replica cancel the prediction; its record afterwards. Raises
        TimeoutError if the owner does not answer within CANCEL_WAIT_S."""
        self._expire(self._clock())
        entry = self._entries.get(prediction_id)
        if entry is None or entry.record["status"] in TERMINAL:
            return None if entry is None else entry.record
        if prediction_id in self._orphans:  # no replica holds it right now
            return self._settle(prediction_id, "canceled", None)
        answer: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._answers.setdefault(prediction_id, []).append(answer)
        self._mailbox(entry.owner).put_nowait({"cancel": prediction_id})
        try:
            return await asyncio.wait_for(answer, CANCEL_WAIT_S)
        finally:
            waiting = self._answers.get(prediction_id, [])
            if answer in waiting:
                waiting.remove(answer)
            if not waiting:
                self._answers.pop(prediction_id, None)

    async def answer(self, owner: str, prediction_id: str, record: dict[str, Any] | None) -> None:
        """The owner's record of a prediction it was asked to cancel (None: it had none)."""
        if record is not None:
            await self.publish(owner, [record])
        for waiting in self._answers.pop(prediction_id, []):
            if not waiting.done():
                waiting.set_result(record)

    # --- uploaded files ---------------------------------------------------------------------------

    async def add_file(self, upload: Any, content: bytes) -> bool:
        """Keeps an upload for `ttl_s`; False if `max_files` are held already."""
        if await self.file_count() >= self._max_files:
            return False
        ref = await self._keep(content)
        self._files[upload.id] = _File(upload, [ref], self._clock() + self._ttl_s)
        return True

    async def file(self, file_id: str) -> Any | None:
        """The upload (what files.get answers), or None."""
        await self.file_count()
        held = self._files.get(file_id)
        return None if held is None else held.upload

    async def file_content(self, file_id: str) -> tuple[str, bytes] | None:
        """The upload's type and bytes, or None. Read here, where they were put: a replica that
        read the object itself, borrowing the reference, stalled for its whole timeout now and
        then (about one read in 250 under the test suite's load)."""
        await self.file_count()
        held = self._files.get(file_id)
        return None if held is None else (held.upload.content_type, await self._read(held.content[0]))

    async def delete_file(self, file_id: str) -> bool:
        return self._files.pop(file_id, None) is not None

    async def file_count(self) -> int:
        now = self._clock()
        while self._files and next(iter(self._files.values())).expires < now:
            self._files.popitem(last=False)  # the reference goes, and with it the object
        return len(self._files)

    # --- inside -----------------------------------------------------------------------------------

    def _drop(self, owner: str, why: str) -> None:
        if owner in self._gone:
            return
        self._live.pop(owner, None)
        self._ready.discard(owner)
        self._gone.add(owner)
        self._mailbox(owner).put_nowait(None)  # ends its next_orders call, even one still to come
        handed = failed = 0
        for prediction_id, entry in list(self._entries.items()):
            if entry.owner != owner or entry.record["status"] in TERMINAL:
                continue
            if prediction_id in self._answers:  # it was being canceled: that is what it becomes
                self._settle(prediction_id, "canceled", None)
            elif entry.record["status"] != "starting":
                self._settle(prediction_id, "failed", STOPPED_WHILE_RUNNING)
                failed += 1
            elif entry.spec is None or entry.attempts >= MAX_ATTEMPTS:
                self._settle(prediction_id, "failed", STOPPED_TWICE)
                failed += 1
            else:
                entry.attempts += 1
                self._orphans[prediction_id] = self._clock()
                handed += 1
        log.warning("replica %s is gone (%s): %d queued handed over, %d failed", owner, why, handed, failed)
        self._hand_orphans()

    def _hand_orphans(self) -> None:
        while self._orphans and self._ready:
            prediction_id = next(iter(self._orphans))
            del self._orphans[prediction_id]
            entry = self._entries.get(prediction_id)
            if entry is None or entry.record["status"] in TERMINAL:
                continue
            taker = min(self._ready, key=lambda owner: (self._handed.get(owner, 0), owner))
            self._handed[taker] = self._handed.get(taker, 0) + 1
            entry.owner = taker
            self._mailbox(taker).put_nowait({"run": prediction_id, "spec": entry.spec})

    def _settle(self, prediction_id: str, status: str, error: str | None) -> dict[str, Any]:
        entry = self._entries[prediction_id]
        entry.record = {**entry.record, "status": status, "error": error, "completed_at": _now_iso()}
        entry.spec, entry.changed = None, self._clock()
        self._entries.move_to_end(prediction_id)
        self._orphans.pop(prediction_id, None)
        for waiting in self._answers.pop(prediction_id, []):
            if not waiting.done():
                waiting.set_result(entry.record)
        return entry.record

    async def _reap_forever(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.reap()
            except Exception:
                log.exception("reaping gone replicas failed; trying again")

    def _mailbox(self, owner: str) -> asyncio.Queue[dict[str, Any] | None]:
        return self._mailboxes.setdefault(owner, asyncio.Queue())

    def _expire(self, now: float) -> None:
        cutoff = now - self._ttl_s
        while self._entries:
            prediction_id, oldest = next(iter(self._entries.items()))
            if len(self._entries) <= self._max_records and oldest.changed >= cutoff:
                return
            self._entries.popitem(last=False)
            self._orphans.pop(prediction_id, None)
