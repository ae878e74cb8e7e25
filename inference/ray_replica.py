"""A Ray Serve replica's side of the prediction directory (inference/ray_records.py): it publishes
its predictions, renews its lease, carries out the orders it is sent (a cancel, or a prediction
handed over from a replica that stopped), and keeps uploads where every replica reads them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio.to_thread
import ray
from ray.actor import ActorHandle

from inference import files
from inference.app import _resolve_and_prepare  # a create's own decode path, not a copy of it
from inference.batcher import Job
from inference.errors import BadRequest, InferenceError, NotFound, Unavailable
from inference.predictions import Prediction
from inference.ray_records import DIRECTORY, LEASE_S, NAMESPACE, PredictionDirectory
from inference.uploads import FILE_URL, Upload, Uploads, gone

if TYPE_CHECKING:
    from inference.registry import Models

log = logging.getLogger("inference")
HEARTBEAT_S = 1.0  # a tenth of the lease: a busy event loop has room to spare
_CALL_TIMEOUT_S = 20.0  # the longest a request waits for the directory (longer than a cancel's wait)
_FENCED_EXIT = 70
T = TypeVar("T")


def directory(ttl_s: float, max_records: int) -> ActorHandle:
    """The deployment's directory, started by whichever replica (or driver) asks first. Detached
    and on the head node, so that it outlives every replica and the node it runs on stays."""
    actor = ray.remote(PredictionDirectory).options(
        name=DIRECTORY,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        resources={"node:__internal_head__": 0.001},
    )
    return cast(ActorHandle, actor.remote(ttl_s, max_records))


def spec_of(prediction: Prediction) -> dict[str, Any]:
    """All another replica needs to run the prediction in this one's stead."""
    return {
        "id": prediction.id,
        "model": prediction.model,
        "version": prediction.version,
        "input": prediction.input,
        "created_at": prediction.created_at,
        "base_url": prediction.base_url,
        "webhook": prediction.webhook,
        "webhook_events": sorted(prediction.webhook_events),
    }


class RayRecords:
    """The `RemoteRecords` of inference.predictions, under Ray Serve."""

    def __init__(self) -> None:
        self._owner = uuid.uuid4().hex
        self._directory: ActorHandle | None = None
        self._models: Models | None = None
        self._pending: list[dict[str, Any]] = []
        self._specs: dict[str, dict[str, Any]] = {}
        self._sending: set[asyncio.Future[Any]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self, models: Models) -> None:
        self._models = models
        self._loop = asyncio.get_running_loop()
        settings = models.settings
        self._directory = await asyncio.to_thread(directory, settings.prediction_ttl_s, settings.max_records)
        await self._ask(self._directory.join.remote(self._owner))
        self._spawn(self._listen(), "prediction-directory-orders")
        self._spawn(self._renew(), "prediction-directory-lease")

    def publish(self, prediction: Prediction) -> None:
        # A batch finishes many predictions at once: they travel in one actor call.
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._send)
        self._pending.append(prediction.to_json(prediction.base_url))
        if prediction.status == "starting":
            self._specs[prediction.id] = spec_of(prediction)

    async def synced(self) -> None:
        self._send()
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=_CALL_TIMEOUT_S)

    async def get(self, prediction_id: str) -> dict[str, Any] | None:
        return cast(dict[str, Any] | None, await self._ask(self._actor.get.remote(prediction_id)))

    async def cancel(self, prediction_id: str) -> dict[str, Any] | None:
        return cast(dict[str, Any] | None, await self._ask(self._actor.cancel.remote(prediction_id)))

    def uploads(self, max_bytes: int) -> Uploads:
        return SharedUploads(self, max_bytes=max_bytes)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._directory is not None:
            await self.synced()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._directory.leave.remote(self._owner), _CALL_TIMEOUT_S)

    async def call(self, method: str, *args: Any) -> Any:
        """The directory's `method(*args)`; Unavailable (503) if it does not answer in time."""
        return await self._ask(getattr(self._actor, method).remote(*args))

    def wait_on_loop(self, work: Coroutine[Any, Any, T]) -> T:
        """From another thread: `work` run on the replica's event loop, and its result."""
        if self._loop is None:
            work.close()
            raise Unavailable("this replica is still starting", retry_after=1)
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    @property
    def _actor(self) -> ActorHandle:
        if self._directory is None:
            raise Unavailable("this replica is still starting", retry_after=1)
        return self._directory

    def _spawn(self, work: Any, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self) -> None:
        if not self._pending:
            return
        (records, self._pending), (specs, self._specs) = (self._pending, []), (self._specs, {})
        # A lone request often starts in the same tick it was queued: its input need not travel.
        latest = {record["id"]: record["status"] for record in records}
        specs = {i: spec for i, spec in specs.items() if latest[i] == "starting"}
        sending: asyncio.Future[Any] = asyncio.ensure_future(
            self._actor.publish.remote(self._owner, records, specs)
        )
        self._sending.add(sending)
        sending.add_done_callback(self._sent)

    def _sent(self, sending: asyncio.Future[Any]) -> None:
        self._sending.discard(sending)
        if sending.cancelled():
            return
        if sending.exception() is not None:
            log.warning("the prediction directory missed an update: %r", sending.exception())
        elif sending.result() is False:
            self._fenced()

    async def _ask(self, call: Any) -> Any:
        try:
            return await asyncio.wait_for(call, _CALL_TIMEOUT_S)
        except Exception as exc:
            log.warning("the prediction directory did not answer: %r", exc)
            raise Unavailable(
                "the prediction's replica or the prediction directory did not answer; retry shortly",
                retry_after=1,
            ) from exc

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                alive: bool = await self.call("heartbeat", self._owner, self._loaded())
            except Exception as exc:
                log.warning("the prediction directory did not take this replica's heartbeat: %r", exc)
                continue
            if not alive:
                self._fenced()

    def _loaded(self) -> bool:
        """Whether loading has ended (a model that failed to load takes nothing over either)."""
        models = self._models
        assert models is not None
        return all(m.version in models.versions or n in models.problems for n, m in models.manifests.items())

    def _fenced(self) -> None:
        # The directory has already failed this replica's running predictions and handed its queued
        # ones to others; going on would give some of them a second, different answer.
        log.critical(
            "the prediction directory took this replica for gone (no heartbeat for %g s) and handed "
            "its predictions over; stopping it, Ray Serve starts another",
            LEASE_S,
        )
        os._exit(_FENCED_EXIT)

    async def _listen(self) -> None:
        while True:
            try:
                orders = await self._actor.next_orders.remote(self._owner)
            except Exception:
                log.exception(
                    "lost the prediction directory: cancels and handed-over predictions no longer reach "
                    "this replica"
                )
                return
            if orders is None:
                return
            for order in orders:
                if "cancel" in order:
                    self._cancel(order["cancel"])
                else:
                    self._spawn(self._take_over(order["run"], order["spec"]), f"take-over-{order['run']}")

    def _cancel(self, prediction_id: str) -> None:
        assert self._models is not None
        try:
            record = self._models.cancel_here(prediction_id)
        except Exception:
            log.exception("cancel of %s, sent by another replica, failed", prediction_id)
            record = None
        self._actor.answer.remote(self._owner, prediction_id, record)

    async def _take_over(self, prediction_id: str, spec: dict[str, Any]) -> None:
        """Runs a prediction that a replica which stopped had queued, under its own id, as its
        create would have (the input is checked and decoded again here)."""
        models = self._models
        assert models is not None
        prediction = Prediction(
            id=spec["id"],
            model=spec["model"],
            version=spec["version"],
            input=spec["input"],
            created_at=spec["created_at"],
            base_url=spec["base_url"],
            webhook=spec["webhook"],
            webhook_events=frozenset(spec["webhook_events"]),
        )
        try:
            manifest = models.by_version(prediction.version)
            batcher = models.batcher(manifest)
            with batcher.reserve():
                batcher.check_capacity()
                values = manifest.schema.validate(prediction.input)
                inputs, prepared = await anyio.to_thread.run_sync(
                    _resolve_and_prepare, models, manifest, batcher, values
                )
                try:
                    batcher.submit(Job(prediction, inputs, prepared=prepared))
                except InferenceError:
                    files.cleanup(inputs)
                    raise
        except InferenceError as exc:
            models.store.add(prediction)
            why = f"its replica stopped before it ran, and the one it was handed to refused it: {exc.detail}"
            models.store.finish(prediction, "failed", error=why)
            return
        models.store.add(prediction)
        models.publish(prediction)
        taken = {"prediction_id": prediction.id, "model": prediction.model}
        log.info("prediction taken over", extra={"fields": taken})


class SharedUploads(Uploads):
    """Uploads in Ray's object store, held by the directory: every replica reads what one received."""

    def __init__(self, records: RayRecords, *, max_bytes: int) -> None:
        super().__init__(max_bytes=max_bytes)  # its folder only spools a form while it arrives
        self._records = records

    async def get(self, file_id: str) -> Upload:
        found = await self._records.call("file", file_id)
        if found is None:
            raise NotFound(gone(file_id))
        return cast(Upload, found)

    async def delete(self, file_id: str) -> None:
        if not await self._records.call("delete_file", file_id):
            raise NotFound(gone(file_id))

    def read_url(self, url: str) -> tuple[str, bytes] | None:
        match = FILE_URL.fullmatch(url)
        if match is None:
            return None
        # On a decode thread; the directory is asked from the event loop, as every other call is.
        found = self._records.wait_on_loop(self._records.call("file_content", match.group(1)))
        if found is None:
            raise NotFound(gone(match.group(1)))
        return cast(tuple[str, bytes], found)

    async def _count(self) -> int:
        return cast(int, await self._records.call("file_count"))

    async def _keep(self, upload: Upload, path: Path) -> None:
        content = await asyncio.to_thread(_take, path)
        if not await self._records.call("add_file", upload, content):
            raise BadRequest("too many uploaded files are held right now; retry in a few minutes")


def _take(path: Path) -> bytes:
    try:
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)
