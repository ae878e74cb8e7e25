"""The shipped models as a visitor meets them: a picture in, a label with its confidence out.

Each predictor is loaded by file path, as the server loads it, from its committed weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from inference.manifest import Manifest, load_manifest
from tests.support.models import load_predictor, open_image
from tests.support.paths import DATA, MODELS_DIR

DIGITS = [str(d) for d in range(10)]
DEFECTS = ["ok", "scratch", "spot", "crack"]


def held_out(model: str) -> list[tuple[Image.Image, str]]:
    """The held-out pictures train.py left for the tests, named `<index>-<label>.png`."""
    paths = sorted((DATA / model).glob("*.png"))
    assert paths, f"no held-out pictures in tests/data/{model}; run its train.py"
    return [(open_image(path), path.stem.split("-", 1)[1]) for path in paths]


def accuracy(predictor: Any, pictures: list[tuple[Image.Image, str]]) -> float:
    outputs = predictor.predict_batch([{"image": image} for image, _ in pictures])
    right = sum(out["label"] == label for out, (_, label) in zip(outputs, pictures, strict=True))
    return float(right) / len(pictures)


def by_label(output: dict[str, Any]) -> dict[str, float]:
    return {p["label"]: p["probability"] for p in output["probabilities"]}


def drawn_on_white_paper(digit: Image.Image) -> Image.Image:
    """A held-out 8x8 digit as dark ink, scaled up off-centre on a 600x600 white sheet."""
    ink = np.asarray(digit.resize((320, 320), Image.Resampling.BICUBIC), dtype=np.float32)
    drawing = Image.fromarray(np.round(255.0 - ink * 0.9).astype(np.uint8)).convert("RGB")
    sheet = Image.new("RGB", (600, 600), "white")
    sheet.paste(drawing, (90, 180))
    return sheet


@pytest.fixture(scope="module")
def digits_manifest() -> Manifest:
    return load_manifest(MODELS_DIR / "digits")


@pytest.fixture(scope="module")
def defects_manifest() -> Manifest:
    return load_manifest(MODELS_DIR / "defects")


@pytest.fixture(scope="module")
def digits(digits_manifest: Manifest) -> Any:
    return load_predictor(digits_manifest)


@pytest.fixture(scope="module")
def defects(defects_manifest: Manifest) -> Any:
    return load_predictor(defects_manifest)


def test_a_dropped_example_digit_shows_its_label_and_confidence(
    digits: Any, digits_manifest: Manifest
) -> None:
    for example in digits_manifest.examples:
        output = digits.predict(open_image(digits_manifest.folder / example.input["image"]))
        assert output["label"] == example.expected
        assert output["confidence"] > 0.5


def test_held_out_digits_are_recognized(digits: Any) -> None:
    assert accuracy(digits, held_out("digits")) >= 0.9


def test_a_digit_drawn_in_dark_ink_on_a_large_white_sheet_is_recognized(digits: Any) -> None:
    pictures = [(drawn_on_white_paper(image), label) for image, label in held_out("digits")]
    assert accuracy(digits, pictures) >= 0.9


def test_a_blank_sheet_gets_an_answer_marked_unsure(digits: Any) -> None:
    blank = digits.predict(Image.new("L", (300, 200), 255))
    outputs = digits.predict_batch([{"image": image} for image, _ in held_out("digits")])
    typical = sorted(out["confidence"] for out in outputs)[len(outputs) // 2]
    # What a visitor reads: a guess it is not sure of, well below how sure it is of a real digit.
    assert blank["label"] in DIGITS
    assert blank["confidence"] < 0.5 < typical


def test_each_defect_example_is_classified_as_its_class(defects: Any, defects_manifest: Manifest) -> None:
    assert sorted(str(e.expected) for e in defects_manifest.examples) == sorted(DEFECTS)
    for example in defects_manifest.examples:
        output = defects.predict(open_image(defects_manifest.folder / example.input["image"]))
        assert output["label"] == example.expected


def test_most_held_out_surfaces_are_classified_correctly(defects: Any) -> None:
    assert accuracy(defects, held_out("defects")) >= 0.75


def test_a_batch_gets_the_same_answers_as_one_picture_at_a_time(digits: Any, defects: Any) -> None:
    for predictor, model in ((digits, "digits"), (defects, "defects")):
        images = [image for image, _ in held_out(model)[:5]]
        images.append(Image.new("RGB", (900, 500), (200, 190, 180)))  # a large plain photo
        batched = predictor.predict_batch([{"image": image} for image in images])
        for image, together in zip(images, batched, strict=True):
            alone = predictor.predict(image)
            assert together["label"] == alone["label"]
            assert by_label(together) == pytest.approx(by_label(alone), abs=1e-3)


def test_probabilities_name_every_class_sum_to_one_and_come_sorted(digits: Any, defects: Any) -> None:
    for predictor, model, classes in ((digits, "digits", DIGITS), (defects, "defects", DEFECTS)):
        output = predictor.predict(held_out(model)[0][0])
        probabilities = [p["probability"] for p in output["probabilities"]]
        assert sorted(p["label"] for p in output["probabilities"]) == sorted(classes)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)
        assert probabilities == sorted(probabilities, reverse=True)
        assert output["label"] == output["probabilities"][0]["label"]
        assert output["confidence"] == probabilities[0]
        assert all(p == round(p, 4) for p in probabilities)


def test_manifests_report_held_out_accuracy_and_small_weights(
    digits_manifest: Manifest, defects_manifest: Manifest
) -> None:
    for manifest in (digits_manifest, defects_manifest):
        measured = manifest.measured
        assert measured["accuracy"] >= 0.9
        assert measured["heldout_size"] >= 300
        assert measured["latency_ms"] > 0 and measured["train_seconds"] > 0
        assert (manifest.folder / "weights.pt").stat().st_size < 5 * 1024 * 1024


def test_the_image_input_is_in_each_models_schema(
    digits_manifest: Manifest, defects_manifest: Manifest
) -> None:
    for manifest in (digits_manifest, defects_manifest):
        schema = manifest.schema.json_schema()
        assert schema["required"] == ["image"]
        assert schema["properties"]["image"]["contentMediaType"] == "image/*"
        assert schema["properties"]["image"]["description"]
