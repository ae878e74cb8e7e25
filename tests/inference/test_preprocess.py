"""A predictor that splits its work: per-input preprocessing runs on a decode thread as each
request arrives, overlapped with the batch the model is running, and the batch gets its results."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import gates as fixture_gates
from tests.support.inference import auth, model_server, png_data_url

PREDICT = """
import threading

from inference.predictor import BasePredictor, Image, Input
from tests.support.gates import GATE, PREPARED, RUNNING


class Predictor(BasePredictor):
    def predict(self, image: Image = Input(description="Any image")) -> dict:
        return self.predict_prepared([self.preprocess(image)])[0]

    def preprocess(self, image: Image) -> dict:
        if image.width > 500:
            raise ValueError(f"images wider than 500 pixels are not taken, this one is {image.width}")
        PREPARED.append((image.width, threading.current_thread().name))
        return {"width": image.width, "prepared_on": threading.current_thread().name}

    def predict_prepared(self, items: list[dict]) -> list[dict]:
        RUNNING.set()
        GATE.wait(30)
        return [dict(item, ran_on=threading.current_thread().name) for item in items]
"""
CREATE = "/v1/models/modelfolio/split/predictions"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with model_server(
        tmp_path_factory.mktemp("models"), "split", PREDICT, "[batching]\nmax_batch_size = 4\n"
    ) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers=auth(), timeout=30) as c:
        yield c


def wait_for(client: httpx.Client, prediction_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (p := client.get(f"/v1/predictions/{prediction_id}").json())["status"] not in (
        "succeeded",
        "failed",
    ):
        assert time.monotonic() < deadline, p
        time.sleep(0.02)
    return p


def test_an_input_is_prepared_while_the_model_runs_the_previous_batch(client: httpx.Client) -> None:
    gate, running = fixture_gates.GATE, fixture_gates.RUNNING
    gate.clear()
    running.clear()
    try:
        first = client.post(CREATE, json={"input": {"image": png_data_url((11, 5))}}).json()
        assert running.wait(30), "the first prediction never reached the model"
        second = client.post(CREATE, json={"input": {"image": png_data_url((22, 5))}}).json()
        # The model is still held on the first batch, and the second input is already prepared.
        assert not gate.is_set() and fixture_gates.PREPARED[-1][0] == 22
    finally:
        gate.set()
    outputs = [wait_for(client, p["id"]) for p in (first, second)]
    assert [o["status"] for o in outputs] == ["succeeded", "succeeded"]
    assert [o["output"]["width"] for o in outputs] == [11, 22]
    prepared_on, ran_on = outputs[1]["output"]["prepared_on"], outputs[1]["output"]["ran_on"]
    assert prepared_on != ran_on and ran_on.startswith("predict")


def test_an_input_its_preprocess_refuses_is_a_422_naming_why(client: httpx.Client) -> None:
    answer = client.post(CREATE, json={"input": {"image": png_data_url((600, 10))}})
    assert answer.status_code == 422
    assert "wider than 500 pixels" in answer.json()["detail"]


def test_a_predictor_with_preprocess_needs_predict_prepared(tmp_path: Path) -> None:
    from inference.loader import load
    from inference.manifest import load_manifest

    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "predict.py").write_text(PREDICT.replace("def predict_prepared", "def something_else"))
    (folder / "manifest.toml").write_text('title = "Half"\nprice_per_second = "0.001"\n')
    with pytest.raises(TypeError, match="has preprocess\\(\\) but no predict_prepared"):
        load(load_manifest(folder), "owner")
