"""The batcher driven by Hypothesis through submits, cancels, expired deadlines, a failing model and
shutdown, in random orders: every prediction ends in exactly one terminal state, the queue drains,
and no temporary file is left behind. No HTTP, no torch: a fake model behind the real Batcher."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from inference.batcher import Batcher, Job
from inference.errors import QueueFull
from inference.metrics import Metrics
from inference.predictions import TERMINAL, Prediction, PredictionStore, new_id
from inference.predictor import Path


@dataclass
class FakeManifest:
    name: str = "fake"
    max_batch_size: int = 3
    max_queue: int = 5
    batch_window_ms: float = 0


class FakeModel:
    """Doubles each input's number; raises for negative numbers, as a predictor bug would."""

    manifest = FakeManifest()
    ref = "owner/fake"

    def run(self, inputs: list[dict[str, Any]]) -> list[tuple[Any, float]]:
        return [(ValueError("negative") if i["n"] < 0 else {"double": 2 * i["n"]}, 0.001) for i in inputs]


class BatcherMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.endings: Counter[str] = Counter()
        self.store = PredictionStore(ttl_s=3600, max_finished=10_000,
                                     on_finish=lambda p: self.endings.update([p.id]))
        self.batcher = Batcher(FakeModel(), self.store, Metrics(dict))  # type: ignore[arg-type]
        self.loop.run_until_complete(self._start())
        self.predictions: list[Prediction] = []
        self.temp_files: list[FsPath] = []
        self.stopped = False

    async def _start(self) -> None:
        self.batcher.start()

    @precondition(lambda self: not self.stopped)
    @rule(n=st.integers(-2, 50), expired=st.booleans())
    def submit(self, n: int, expired: bool) -> None:
        with tempfile.NamedTemporaryFile(delete=False) as f:
            upload = Path(f.name)  # stands for a decoded file input the batcher must clean up
        prediction = Prediction(id=new_id(), model="owner/fake", version="v", input={"n": n})
        deadline = time.monotonic() - 1 if expired else None
        try:
            self.batcher.submit(Job(prediction, {"n": n, "file": upload}, deadline))
        except QueueFull:
            upload.unlink()
            return
        self.store.add(prediction)
        self.predictions.append(prediction)
        self.temp_files.append(upload)

    @precondition(lambda self: bool(self.predictions))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        prediction = data.draw(st.sampled_from(self.predictions))
        self.store.finish(prediction, "canceled")

    @rule(turns=st.integers(1, 5))
    def let_it_run(self, turns: int) -> None:
        for _ in range(turns):
            self.loop.run_until_complete(asyncio.sleep(0))

    @precondition(lambda self: not self.stopped)
    @rule()
    def shut_down(self) -> None:
        self.loop.run_until_complete(self.batcher.stop())
        self.stopped = True

    @invariant()
    def each_prediction_ends_at_most_once(self) -> None:
        assert all(count == 1 for count in self.endings.values())

    def teardown(self) -> None:
        if not hasattr(self, "loop"):
            return
        if not self.stopped:
            deadline = time.monotonic() + 30
            while any(not p.terminal for p in self.predictions) and time.monotonic() < deadline:
                self.loop.run_until_complete(asyncio.sleep(0.001))
            self.loop.run_until_complete(self.batcher.stop())
        self.loop.close()
        assert all(p.status in TERMINAL for p in self.predictions)
        assert all(self.endings[p.id] == 1 for p in self.predictions)
        assert self.batcher.depth == 0
        for p in self.predictions:
            if p.status == "succeeded":
                assert p.output == {"double": 2 * p.input["n"]}
        leaked = [f for f in self.temp_files if f.exists()]
        assert leaked == []


BatcherMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_batcher_states = BatcherMachine.TestCase
