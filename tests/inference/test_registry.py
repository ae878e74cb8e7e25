"""New weights or code go live without a dropped request: hot reload under load, and a canary."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.inference import auth, inference_server, png_data_url
from tests.support.paths import FIXTURES

CREATE = "/v1/models/modelfolio/shapes/predictions"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES / "models" / "shapes", tmp_path / "models" / "shapes")
    return tmp_path / "models" / "shapes"


@pytest.fixture
def server(folder: Path) -> Iterator[str]:
    with inference_server(folder.parent) as url:
        yield url


def release(folder: Path) -> None:
    """A second version of the model, as an owner would ship it: the predictor's code changes."""
    predict = folder / "predict.py"
    predict.write_text(
        predict.read_text().replace('"mode": image.mode}', '"mode": image.mode, "generation": 2}')
    )


class Load:
    """Clients sending predictions with Prefer: wait until told to stop; every answer is kept."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.answers: list[httpx.Response] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._new = threading.Condition(self._lock)
        self._threads = [threading.Thread(target=self._client, args=(url,)) for _ in range(clients)]
        for t in self._threads:
            t.start()

    def _client(self, url: str) -> None:
        with httpx.Client(base_url=url, headers=auth(), timeout=30) as c:
            while not self.stop.is_set():
                answer = c.post(CREATE, json={"input": {"image": png_data_url()}}, headers={"Prefer": "wait"})
                with self._new:
                    self.answers.append(answer)
                    self._new.notify_all()

    def wait_for(self, condition, timeout: float = 60) -> None:
        with self._new:
            assert self._new.wait_for(lambda: condition(self.answers), timeout), "load did not progress"

    def finish(self) -> list[httpx.Response]:
        self.stop.set()
        for t in self._threads:
            t.join(30)
        return self.answers


def generations(answers: list[httpx.Response]) -> list[int]:
    return [a.json()["output"].get("generation", 1) for a in answers if a.status_code == 201]


def test_a_reload_under_load_drops_and_fails_nothing_and_serves_the_new_version(
    server: str, folder: Path
) -> None:
    load = Load(server)
    try:
        load.wait_for(lambda answers: len(answers) >= 20)
        release(folder)
        reloaded = httpx.post(f"{server}/v1/admin/models/shapes/reload", headers=auth(), timeout=60).json()
        load.wait_for(lambda answers: generations(answers).count(2) >= 20)
    finally:
        answers = load.finish()
    assert reloaded["changed"] is True
    assert [a.text for a in answers if a.status_code != 201] == []
    assert {a.json()["status"] for a in answers} == {"succeeded"}
    seen = generations(answers)
    assert seen[0] == 1 and seen[-1] == 2
    model = httpx.get(f"{server}/v1/models/modelfolio/shapes", headers=auth()).json()
    assert model["latest_version"]["id"] == reloaded["version"]
    again = httpx.post(f"{server}/v1/admin/models/shapes/reload", headers=auth(), timeout=60).json()
    assert again["changed"] is False


def test_a_canary_takes_its_share_until_promoted(server: str, folder: Path) -> None:
    release(folder)
    canary = httpx.post(
        f"{server}/v1/admin/models/shapes/reload", json={"canary_weight": 0.5}, headers=auth(), timeout=60
    ).json()
    with httpx.Client(base_url=server, headers=auth(), timeout=30) as c:
        split = [
            c.post(CREATE, json={"input": {"image": png_data_url()}}, headers={"Prefer": "wait"})
            for _ in range(60)
        ]
        assert set(generations(split)) == {1, 2}  # 60 draws at 0.5: both sides, all but surely
        pinned = c.post(
            "/v1/predictions",
            headers={"Prefer": "wait"},
            json={"version": canary["version"], "input": {"image": png_data_url()}},
        )
        assert pinned.json()["output"]["generation"] == 2
        assert (
            c.post("/v1/admin/models/shapes/promote", json={"version": canary["version"]}).status_code == 200
        )
        after = [
            c.post(CREATE, json={"input": {"image": png_data_url()}}, headers={"Prefer": "wait"})
            for _ in range(10)
        ]
    assert generations(after) == [2] * 10


def test_bad_reload_requests_are_refused(server: str) -> None:
    with httpx.Client(base_url=server, headers=auth(), timeout=30) as c:
        assert c.post("/v1/admin/models/nope/reload").status_code == 404
        assert c.post("/v1/admin/models/shapes/reload", json={"canary_weight": 2}).status_code == 422
        assert c.post("/v1/admin/models/shapes/promote", json={"version": "x"}).status_code == 404
        assert httpx.post(f"{server}/v1/admin/models/shapes/reload").status_code == 401


def test_a_broken_release_is_refused_by_name_and_the_running_version_keeps_serving(
    server: str, folder: Path
) -> None:
    manifest = folder / "manifest.toml"
    manifest.write_text(
        manifest.read_text().replace('price_per_second = "0.002"', 'price_per_second = "free"')
    )
    with httpx.Client(base_url=server, headers=auth(), timeout=30) as c:
        refused = c.post("/v1/admin/models/shapes/reload")
        served = c.post(CREATE, json={"input": {"image": png_data_url()}}, headers={"Prefer": "wait"})
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith(f"{manifest}: price_per_second must be a decimal string")
    assert served.json()["status"] == "succeeded"


def test_a_release_whose_setup_fails_is_refused_and_the_running_version_keeps_serving(
    server: str, folder: Path
) -> None:
    predict = folder / "predict.py"
    broken = (
        "class Predictor(BasePredictor):\n"
        "    def setup(self) -> None:\n"
        "        raise RuntimeError('no weights')\n"
    )
    predict.write_text(predict.read_text().replace("class Predictor(BasePredictor):\n", broken, 1))
    with httpx.Client(base_url=server, headers=auth(), timeout=30) as c:
        refused = c.post("/v1/admin/models/shapes/reload")
        served = c.post(CREATE, json={"input": {"image": png_data_url()}}, headers={"Prefer": "wait"})
    assert refused.status_code == 422
    assert refused.json()["detail"] == "the new version of shapes failed to load: no weights"
    assert served.json()["status"] == "succeeded"
