"""The batcher driven by Hypothesis through submits, cancels, expired deadlines, a failing model, hot
reloads and shutdown, in random orders. A reload starts a new version beside the old one; new requests
go to the new version while the old one drains, as a task on the loop, as the server's reload does.
Every prediction ends in exactly one terminal state; none queued on a retired version fails because of
the reload; each success carries the output of the version it was sent to; no queue is left non-empty
and no temporary file is left behind. No HTTP, no torch: fake models behind the real Batcher and Models."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from inference.batcher import Batcher, Job
from inference.errors import QueueFull
from inference.predictions import TERMINAL, Prediction, PredictionStore, new_id
from inference.predictor import Path
from inference.registry import Models
from tests.support.inference import OWNER, settings_for

DRAIN_LIMIT_S = 5  # a fake batch takes microseconds: a drain still waiting after 5 s (a busy machine
# can pause a process for a second) never ends


@dataclass
class FakeManifest:
    version: str
    name: str = "fake"
    max_batch_size: int = 3
    max_queue: int = 5
    batch_window_ms: float = 0


class FakeModel:
    """Doubles each input's number and says which version did it; raises for negative numbers, as a
    predictor bug would."""

    ref = f"{OWNER}/fake"

    def __init__(self, version: int) -> None:
        self.version = version
        self.manifest = FakeManifest(f"v{version}")
        self.batch_cap = self.manifest.max_batch_size  # as LoadedModel: no out-of-memory lowered it

    def run(self, inputs: list[dict[str, Any]]) -> list[tuple[Any, float]]:
        return [
            (ValueError("negative") if i["n"] < 0 else {"double": 2 * i["n"], "version": self.version}, 0.001)
            for i in inputs
        ]


class InlineExecutor(Executor):
    """Runs each batch at once, on the loop's thread, where the server uses one model thread: a
    real thread finishes batches at moments Hypothesis cannot replay, and it rightly calls such a
    run flaky ("inconsistent data generation")."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class BatcherMachine(RuleBasedStateMachine):
    """Drives the real `Models`: its routing, `promote` (which retires the old version with
    `stop(drain=True)`) and `close`. `Models.reload` itself is not called: before it promotes, it
    reads a model folder from disk, imports its predictor through the loader and warms it up, none
    of which bears on whether a reload drops work; the machine does that part with a fake model."""

    @initialize()
    def start(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.endings: Counter[str] = Counter()
        self.models_dir = tempfile.TemporaryDirectory()  # no folders: every version is a fake one
        self.models = Models(settings_for(FsPath(self.models_dir.name)))
        self.models.store = PredictionStore(
            ttl_s=3600, max_finished=10_000, on_finish=lambda p: self.endings.update([p.id])
        )
        self.batchers: list[Batcher] = []  # every version ever loaded, oldest first
        self.requests: list[asyncio.Task[None]] = []
        self.reloads: list[asyncio.Task[None]] = []
        self.predictions: list[Prediction] = []
        self.expired: set[str] = set()
        self.temp_files: list[FsPath] = []
        self.stopped = self.closed = False
        first = self.loop.run_until_complete(self._load())
        self.models.manifests["fake"] = self.models.versions[first].model.manifest

    async def _load(self) -> str:
        """What `Models._load` does once the predictor is imported and warmed up."""
        model = FakeModel(len(self.batchers))
        batcher = Batcher(
            model,
            self.models.store,
            self.models.metrics,  # type: ignore[arg-type]
            executor=InlineExecutor(),
        )
        batcher.start()
        self.batchers.append(batcher)
        self.models.versions[model.manifest.version] = batcher
        return model.manifest.version

    async def _reload(self) -> None:
        await self.models.promote("fake", await self._load())

    async def _request(self, n: int, expired: bool, decoding: int, upload: Path) -> None:
        """A create as the server handles it: the version is chosen and its batcher reserved with no
        await between, then the input is decoded (`decoding` loop turns) and the job queued."""
        manifest = self.models.route(self.models.manifest(OWNER, "fake"))
        batcher = self.models.batcher(manifest)
        assert batcher is self.batchers[-1], "a new request went to an older version"
        with batcher.reserve():
            for _ in range(decoding):
                await asyncio.sleep(0)
            prediction = Prediction(
                id=new_id(), model=f"{OWNER}/fake", version=manifest.version, input={"n": n}
            )
            deadline = time.monotonic() - 1 if expired else None
            try:
                batcher.submit(Job(prediction, {"n": n, "file": upload}, deadline))
            except QueueFull:
                upload.unlink()
                return
            self.models.store.add(prediction)
            self.predictions.append(prediction)
            if expired:
                self.expired.add(prediction.id)

    @precondition(lambda self: not self.stopped)
    @rule(n=st.integers(-2, 50), expired=st.booleans(), decoding=st.integers(0, 2))
    def submit(self, n: int, expired: bool, decoding: int) -> None:
        with tempfile.NamedTemporaryFile(delete=False) as f:
            upload = Path(f.name)  # stands for a decoded file input the batcher must clean up
        self.temp_files.append(upload)
        self.requests.append(self.loop.create_task(self._request(n, expired, decoding, upload)))

    @precondition(lambda self: bool(self.predictions))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        prediction = data.draw(st.sampled_from(self.predictions))
        self.models.store.finish(prediction, "canceled")

    @rule(turns=st.integers(1, 5))
    def let_it_run(self, turns: int) -> None:
        for _ in range(turns):
            self.loop.run_until_complete(asyncio.sleep(0))

    @precondition(lambda self: not self.stopped)
    @rule()
    def reload(self) -> None:
        self.reloads.append(self.loop.create_task(self._reload()))

    @precondition(lambda self: not self.stopped)
    @rule()
    def shut_down(self) -> None:
        self.stopped = True  # even if it fails: the teardown must not shut down twice
        self.loop.run_until_complete(self._shut_down())
        self.closed = True

    async def _shut_down(self) -> None:
        """As uvicorn stops: requests in flight end first, a reload's (and so its drain) among them,
        then the models close."""
        await asyncio.gather(*self.requests)
        try:
            await asyncio.wait_for(asyncio.gather(*self.reloads), DRAIN_LIMIT_S)
        except TimeoutError:
            raise AssertionError("a retired version's stop(drain=True) never returned") from None
        await self.models.close()

    async def _finish_work(self) -> None:
        await asyncio.gather(*self.requests)
        await asyncio.wait_for(asyncio.gather(*(p.done.wait() for p in self.predictions)), DRAIN_LIMIT_S)

    @invariant()
    def each_prediction_ends_at_most_once(self) -> None:
        assert all(count == 1 for count in self.endings.values())

    def teardown(self) -> None:
        if not hasattr(self, "loop"):
            return
        try:
            if not self.stopped:
                self.loop.run_until_complete(self._finish_work())
                self.shut_down()
            if self.closed:  # a shutdown that failed has failed the example already
                self._check_endings()
        finally:
            self._clean_up()

    def _check_endings(self) -> None:
        assert all(p.status in TERMINAL for p in self.predictions)
        assert all(self.endings[p.id] == 1 for p in self.predictions)
        assert all(b.depth == 0 for b in self.batchers)
        latest = self.batchers[-1].model.manifest.version
        assert list(self.models.versions) == [latest]
        for p in self.predictions:
            if p.status == "succeeded":
                assert p.output == {"double": 2 * p.input["n"], "version": int(p.version.removeprefix("v"))}
            elif p.status == "failed":
                # Only the version still serving at shutdown may fail work for shutting down.
                shut_down = p.version == latest and "shut down" in str(p.error)
                assert self._failed_for_its_own_reason(p) or shut_down, f"{p.version}: {p.error}"
        leaked = [f for f in self.temp_files if f.exists()]
        assert leaked == []

    def _failed_for_its_own_reason(self, p: Prediction) -> bool:
        if p.error == "negative":
            return bool(p.input["n"] < 0)
        return str(p.error).startswith("deadline passed") and p.id in self.expired

    def _clean_up(self) -> None:
        """Whatever a failing example left behind: stuck tasks, live workers, files."""
        self.loop.run_until_complete(self._stop_everything())
        self.loop.close()
        self.models.uploads.close()
        self.models_dir.cleanup()
        for f in self.temp_files:
            f.unlink(missing_ok=True)

    async def _stop_everything(self) -> None:
        leftovers = asyncio.all_tasks() - {asyncio.current_task()}
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        for batcher in self.batchers:
            await batcher.stop()


BatcherMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_batcher_states = BatcherMachine.TestCase
