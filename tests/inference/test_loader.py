"""What the GPU fast path needs from the model runner, checked on CPU: batches padded to fixed
sizes (buckets, for compiled and CUDA graphs warmed at start) and a batch that runs out of device
memory split in halves instead of failing its predictions."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from inference.batcher import Batcher
from inference.errors import ConfigError
from inference.loader import LoadedModel, load
from inference.manifest import load_manifest
from inference.metrics import Metrics
from inference.predictions import PredictionStore
from tests.support.inference import model_folder

PREDICT = """
import torch

from inference.predictor import BasePredictor

SIZES = []  # every batch size predict_batch was called with


class Predictor(BasePredictor):
    fits = 64  # the largest batch that fits in "device memory"

    def predict(self, n: int = 1) -> dict:
        return self.predict_batch([{"n": n}])[0]

    def predict_batch(self, inputs: list[dict]) -> list[dict]:
        SIZES.append(len(inputs))
        if len(inputs) > self.fits:
            raise torch.OutOfMemoryError(f"CUDA out of memory: a batch of {len(inputs)} does not fit")
        return [{"double": 2 * item["n"]} for item in inputs]
"""


def model_with(tmp_path: Path, batching: str) -> LoadedModel:
    folder = model_folder(
        tmp_path, "counter", PREDICT, f"[batching]\n{batching}\n[[examples]]\ninput = {{ n = 1 }}\n"
    )
    return load(load_manifest(folder), "owner")


def sizes(model: LoadedModel) -> list[int]:
    """The batch sizes the model's predict_batch was called with, in order."""
    return sys.modules[type(model.predictor).__module__].SIZES  # type: ignore[no-any-return]


def outputs(results: list[tuple[object, float]]) -> list[object]:
    return [output for output, _ in results]


def test_a_batch_is_padded_up_to_its_bucket_and_only_real_answers_come_back(tmp_path: Path) -> None:
    model = model_with(tmp_path, "max_batch_size = 8\nbuckets = [1, 4, 8]")
    results = model.run([{"n": n} for n in (1, 2, 3)])
    assert outputs(results) == [{"double": 2}, {"double": 4}, {"double": 6}]
    assert sizes(model) == [4]
    assert outputs(model.run([{"n": 5}])) == [{"double": 10}]  # a lone input uses bucket 1
    assert sizes(model) == [4, 1]


def test_each_bucket_is_warmed_up_before_the_model_serves(tmp_path: Path) -> None:
    model = model_with(tmp_path, "max_batch_size = 8\nbuckets = [1, 4, 8]")
    batcher = Batcher(model, PredictionStore(ttl_s=60, max_finished=10), Metrics(dict))
    asyncio.run(batcher.warm_up([{"n": 1}]))
    assert sorted(set(sizes(model))) == [1, 4, 8]


def test_buckets_must_cover_the_largest_batch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="buckets end at 4, below max_batch_size 8"):
        model_with(tmp_path, "max_batch_size = 8\nbuckets = [1, 4]")


def test_a_batch_that_runs_out_of_memory_is_halved_and_every_prediction_succeeds(tmp_path: Path) -> None:
    model = model_with(tmp_path, "max_batch_size = 16")
    model.predictor.fits = 4  # type: ignore[attr-defined]
    results = model.run([{"n": n} for n in range(10)])
    assert outputs(results) == [{"double": 2 * n} for n in range(10)]
    assert sizes(model) == [10, 5, 2, 3, 5, 2, 3]  # each half split again until it fits
    assert model.batch_cap == 2  # half of the smallest batch that did not fit, from now on


@pytest.mark.parametrize("window", ["50", "-1", '"soon"'])
def test_a_batching_window_longer_than_2_ms_is_refused_by_name(tmp_path: Path, window: str) -> None:
    with pytest.raises(ConfigError, match="window_ms must be a number from 0 to 2"):
        model_with(tmp_path, f"max_batch_size = 8\nwindow_ms = {window}")
