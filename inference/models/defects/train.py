"""Trains the surface-defect classifier: `python -m inference.models.defects.train`.

The training pictures come from one seed and the held-out pictures from another, both drawn by
surfaces.py; the held-out ones are only ever used to measure. `--measure` measures the shipped
weights again without training. `calibration_images` and `heldout_images` are the manifest's
[export] hooks: what `python -m inference export defects --int8` calibrates on and measures on.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from inference.models._training import (
    earlier_measured,
    fit,
    measure_only,
    record_measurements,
    seed_everything,
)
from inference.models.defects.network import DefectNet
from inference.models.defects.predict import LABELS, WEIGHTS, Predictor, to_input
from inference.models.defects.surfaces import CLASSES, surface_image

TRAIN_SEED = 2024
HELDOUT_SEED = 9001
TRAIN_PER_CLASS = 800
HELDOUT_PER_CLASS = 150
EPOCHS = 16
FOLDER = Path(__file__).parent
TESTS_DATA = FOLDER.parents[2] / "tests" / "data" / "defects"
TEST_IMAGES_PER_CLASS = 2
CALIBRATION_PER_CLASS = 32


def surfaces(per_class: int, seed: int) -> tuple[list[Image.Image], list[str]]:
    rng = np.random.default_rng(seed)
    labels = [label for _ in range(per_class) for label in CLASSES]
    return [surface_image(label, rng) for label in labels], labels


def calibration_images() -> list[Image.Image]:
    """The first 128 training pictures: what INT8 is calibrated on."""
    return surfaces(CALIBRATION_PER_CLASS, TRAIN_SEED)[0]


def heldout_images() -> list[Image.Image]:
    """The 600 held-out pictures: where a variant must agree with fp32."""
    return surfaces(HELDOUT_PER_CLASS, HELDOUT_SEED)[0]


def flip_and_turn(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random mirror images and quarter turns: a defect is a defect whichever way up."""

    def some() -> torch.Tensor:
        return (torch.rand(len(x), generator=generator) < 0.5)[:, None, None, None]

    x = torch.where(some(), x.flip(3), x)
    x = torch.where(some(), x.flip(2), x)
    return torch.where(some(), x.transpose(2, 3), x)


def write_examples(images: list[Image.Image], labels: list[str]) -> None:
    (FOLDER / "examples").mkdir(exist_ok=True)
    for wanted in CLASSES:
        images[labels.index(wanted)].save(FOLDER / "examples" / f"{wanted}.png", optimize=True)


def write_test_data(images: list[Image.Image], labels: list[str]) -> None:
    TESTS_DATA.mkdir(parents=True, exist_ok=True)
    for old in TESTS_DATA.glob("*.png"):
        old.unlink()
    for wanted in CLASSES:
        # The first of each class is already the example; the tests get the next ones.
        picks = [i for i, label in enumerate(labels) if label == wanted][1 : 1 + TEST_IMAGES_PER_CLASS]
        for index in picks:
            images[index].save(TESTS_DATA / f"{index:04d}-{wanted}.png", optimize=True)


def main(argv: list[str] | None = None) -> None:
    measure = measure_only("python -m inference.models.defects.train", argv)
    seed_everything(TRAIN_SEED)
    if measure:
        train_seconds = earlier_measured(FOLDER / "manifest.toml")["train_seconds"]
    else:
        started = time.perf_counter()
        images, labels = surfaces(TRAIN_PER_CLASS, TRAIN_SEED)
        x = torch.from_numpy(np.stack([to_input(image) for image in images]))
        y = torch.tensor([LABELS.index(label) for label in labels])
        model = fit(
            DefectNet(), x, y, epochs=EPOCHS, batch_size=64, lr=1e-2, augment=flip_and_turn, seed=TRAIN_SEED
        )
        train_seconds = time.perf_counter() - started
        torch.save(model.state_dict(), WEIGHTS)
        print(
            f"defects: trained on {len(images)} pictures in {train_seconds:.1f} s; "
            f"weights {WEIGHTS.stat().st_size / 1024:.0f} KiB"
        )

    heldout, heldout_labels = surfaces(HELDOUT_PER_CLASS, HELDOUT_SEED)
    write_examples(heldout, heldout_labels)
    write_test_data(heldout, heldout_labels)
    predictor = Predictor()
    predictor.setup()
    m = record_measurements(
        FOLDER, predictor, heldout, heldout_labels, train_seconds=train_seconds, latency_image=heldout[0]
    )
    print(
        f"defects: held-out accuracy {m['accuracy']:.4f} ({len(heldout)} pictures); latency "
        f"{m['latency_ms']:.2f} ms; bf16 agrees with fp32 on {m['bf16_agreement']:.2%}, latency "
        f"{m['bf16_latency_ms']:.2f} ms"
    )


if __name__ == "__main__":
    main()
