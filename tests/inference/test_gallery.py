"""The model pages' galleries show what the model really answered: `python -m inference.gallery`
records it through the inference server, and a record holds only for the version and files it saw."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from PIL import Image

from inference import gallery
from inference.manifest import Manifest, discover, load_manifest
from tests.support.inference import TOKEN, auth, model_folder
from tests.support.paths import MODELS_DIR

SIZE_PREDICTOR = """
from inference.predictor import BasePredictor, Image, Input


class Predictor(BasePredictor):
    def predict(self, image: Image = Input(description="Any image"), word: str = Input(default="hi")) -> dict:
        return {"label": f"{image.width}x{image.height} {word}", "confidence": 1.0}
"""


@pytest.mark.parametrize("manifest", discover(MODELS_DIR), ids=lambda m: m.name)
def test_every_shipped_gallery_was_recorded_by_the_version_that_ships(manifest: Manifest) -> None:
    record = gallery.read_record(manifest)

    assert gallery.is_current(manifest, record), (
        f"{manifest.name}/gallery.json is stale: run `{gallery.COMMAND} {manifest.name}`"
    )


def test_the_recorded_answers_are_what_the_server_answers_now(upstream: str) -> None:
    for manifest in discover(MODELS_DIR):
        record = gallery.read_record(manifest)
        assert record is not None
        for entry in record["examples"]:
            image = (manifest.folder / entry["input"]["image"]).read_bytes()
            reply = httpx.post(
                f"{upstream}/v1/models/modelfolio/{manifest.name}/predictions",
                json={"input": {"image": "data:image/png;base64," + base64.b64encode(image).decode()}},
                headers={**auth(TOKEN), "Prefer": "wait"},
                timeout=60,
            ).json()
            assert reply["output"]["label"] == entry["output"]["label"]
            assert reply["output"]["confidence"] == pytest.approx(entry["output"]["confidence"], abs=1e-3)


def test_recording_runs_each_example_and_a_changed_file_makes_the_record_stale(tmp_path: Path) -> None:
    folder = model_folder(
        tmp_path / "models",
        "sizes",
        SIZE_PREDICTOR,
        '[[examples]]\ninput = { image = "examples/a.png", word = "yo" }\n',
    )
    (folder / "examples").mkdir()
    Image.new("RGB", (12, 7), "red").save(folder / "examples" / "a.png")

    assert gallery.record(tmp_path / "models") == ["sizes"]

    manifest = load_manifest(folder)
    written = json.loads((folder / "gallery.json").read_text())
    assert written["examples"][0]["output"] == {"label": "12x7 yo", "confidence": 1.0}
    assert gallery.is_current(manifest, written)
    assert gallery.record(tmp_path / "models", stale_only=True) == []

    Image.new("RGB", (13, 7), "red").save(folder / "examples" / "a.png")
    assert not gallery.is_current(manifest, written)
    (folder / "predict.py").write_text(SIZE_PREDICTOR + "\n# a new version\n")
    assert not gallery.is_current(load_manifest(folder), written)
