"""Trains the digit recognizer on scikit-learn's `load_digits()`: `python -m inference.models.digits.train`.

`--measure` measures the shipped weights again without training (after a change to predict.py).
`calibration_images` and `heldout_images` are the manifest's [export] hooks: what `python -m
inference export digits --int8` calibrates on (training digits) and measures agreement on.

20% of the digits (stratified, seeded) are held out and never trained on. Each training digit is
seen as the dataset stores it and as many random drawings (size, slant, pen width, paper, light,
noise), all passed through the predictor's own preprocessing, so photos and drawings work too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from inference.models._training import (
    earlier_measured,
    fit,
    heldout_accuracy,
    measure_only,
    record_measurements,
    seed_everything,
)
from inference.models.digits.network import DigitNet
from inference.models.digits.predict import WEIGHTS, Predictor, to_digit

SEED = 7
HELDOUT_SHARE = 0.2
DRAWINGS_PER_DIGIT = 7
EPOCHS = 14
FOLDER = Path(__file__).parent
TESTS_DATA = FOLDER.parents[2] / "tests" / "data" / "digits"
EXAMPLE_CLASSES = (3, 5, 7, 8)
TEST_IMAGES_PER_CLASS = 2
CALIBRATION_DIGITS = 128


def as_scanned(digit: np.ndarray) -> Image.Image:
    """The dataset's own form: 8x8, light ink on black, 0..16 stretched to 0..255."""
    return Image.fromarray(np.round(digit * 255.0 / 16.0).astype(np.uint8))


def on_paper(digit: np.ndarray, side: int = 128) -> Image.Image:
    """A held-out digit as a felt-pen drawing: dark ink on white, smoothly upscaled."""
    ink = np.pad(digit / 16.0, 2).astype(np.float32)
    smooth = np.asarray(Image.fromarray(ink).resize((side, side), Image.Resampling.BICUBIC))
    pen = 1.0 / (1.0 + np.exp(-(smooth - 0.4) * 12.0))
    return Image.fromarray(np.round(255.0 - pen * 225.0).astype(np.uint8))


def drawn(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A random drawing of `digit`: size, slant, stretch, pen width, margins, paper, light, noise."""
    side = int(rng.integers(24, 128))
    ink = np.pad(digit / 16.0, 4).astype(np.float32)
    big = Image.fromarray(ink).resize((side, side), Image.Resampling.BICUBIC)
    big = big.transform(
        big.size, Image.Transform.AFFINE, _random_affine(rng, side), resample=Image.Resampling.BILINEAR
    )
    smooth = np.asarray(big)
    softness = rng.uniform(0.02, 0.12)
    pen = 1.0 / (1.0 + np.exp(np.clip((rng.uniform(0.2, 0.6) - smooth) / softness, -30, 30)))
    pen = _crop_with_margins(pen, rng)
    return _on_random_paper(pen, rng)


def _random_affine(rng: np.random.Generator, side: int) -> tuple[float, ...]:
    angle = np.radians(rng.uniform(-15, 15))
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shear = np.array([[1.0, rng.uniform(-0.25, 0.25)], [0.0, 1.0]])
    stretch = np.diag([rng.uniform(0.75, 1.2), rng.uniform(0.9, 1.1)])
    inverse = np.linalg.inv(rotate @ shear @ stretch)  # PIL maps output pixels to input pixels
    centre = np.array([side / 2.0, side / 2.0])
    offset = centre - inverse @ centre
    return (*inverse[0], offset[0], *inverse[1], offset[1])


def _crop_with_margins(pen: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows, cols = np.nonzero(pen > 0.5)
    if len(rows) == 0:
        return pen
    height = rows.max() - rows.min() + 1
    top, bottom, left, right = (height * rng.uniform(0.03, 0.45, size=4)).astype(int)
    return pen[
        max(0, rows.min() - top) : rows.max() + 1 + bottom,
        max(0, cols.min() - left) : cols.max() + 1 + right,
    ]


def _on_random_paper(pen: np.ndarray, rng: np.random.Generator) -> Image.Image:
    if rng.random() < 0.8:
        paper, ink = rng.uniform(0.6, 1.0), rng.uniform(0.0, 0.4)
    else:
        paper, ink = rng.uniform(0.0, 0.3), rng.uniform(0.7, 1.0)
    height, width = pen.shape
    yy, xx = np.mgrid[0:height, 0:width]
    light = rng.uniform(-0.12, 0.12) * (xx / width - 0.5) + rng.uniform(-0.12, 0.12) * (yy / height - 0.5)
    pixels = paper + (ink - paper) * pen + light + rng.normal(0.0, rng.uniform(0.0, 0.05), pen.shape)
    return Image.fromarray(np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8))


def training_set(
    digits: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    features, targets = [], []
    for digit, label in zip(digits, labels, strict=True):
        views = [as_scanned(digit), on_paper(digit)]
        views += [drawn(digit, rng) for _ in range(DRAWINGS_PER_DIGIT)]
        features += [to_digit(view) for view in views]
        targets += [int(label)] * len(views)
    return torch.from_numpy(np.stack(features)).unsqueeze(1), torch.tensor(targets)


def write_examples(digits: np.ndarray, labels: np.ndarray) -> None:
    (FOLDER / "examples").mkdir(exist_ok=True)
    for wanted in EXAMPLE_CLASSES:
        first = int(np.flatnonzero(labels == wanted)[0])
        on_paper(digits[first]).save(FOLDER / "examples" / f"digit-{wanted}.png", optimize=True)


def write_test_data(digits: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
    TESTS_DATA.mkdir(parents=True, exist_ok=True)
    for old in TESTS_DATA.glob("*.png"):
        old.unlink()
    for wanted in range(10):
        for pick in np.flatnonzero(labels == wanted)[:TEST_IMAGES_PER_CLASS]:
            name = f"{indices[pick]:04d}-{wanted}.png"
            as_scanned(digits[pick]).save(TESTS_DATA / name, optimize=True)


def split() -> tuple[Any, np.ndarray, np.ndarray]:
    """The dataset, and its training and held-out indices (stratified, seeded)."""
    data = load_digits()
    indices = np.arange(len(data.target))
    train, heldout = train_test_split(
        indices, test_size=HELDOUT_SHARE, stratify=data.target, random_state=SEED
    )
    return data, train, np.sort(heldout)


def calibration_images() -> list[Image.Image]:
    """128 training digits, each as scanned and as a random drawing: what INT8 is calibrated on."""
    data, train, _ = split()
    rng = np.random.default_rng(SEED)
    picks = rng.choice(train, CALIBRATION_DIGITS, replace=False)
    return [view for i in picks for view in (as_scanned(data.images[i]), drawn(data.images[i], rng))]


def heldout_images() -> list[Image.Image]:
    """The held-out digits as scanned and drawn on paper: where a variant must agree with fp32."""
    data, _, heldout = split()
    digits = data.images[heldout]
    return [as_scanned(d) for d in digits] + [on_paper(d) for d in digits]


def main(argv: list[str] | None = None) -> None:
    measure = measure_only("python -m inference.models.digits.train", argv)
    seed_everything(SEED)
    started = time.perf_counter()
    data, train, heldout = split()
    if measure:
        train_seconds = earlier_measured(FOLDER / "manifest.toml")["train_seconds"]
    else:
        x, y = training_set(data.images[train], data.target[train], np.random.default_rng(SEED))
        model = fit(DigitNet(), x, y, epochs=EPOCHS, seed=SEED)
        train_seconds = time.perf_counter() - started
        torch.save(model.state_dict(), WEIGHTS)
        print(
            f"digits: trained on {len(x)} views of {len(train)} digits in {train_seconds:.1f} s; "
            f"weights {WEIGHTS.stat().st_size / 1024:.0f} KiB"
        )

    digits, labels = data.images[heldout], data.target[heldout]
    write_examples(digits, labels)
    write_test_data(digits, labels, heldout)
    predictor = Predictor()
    predictor.setup()
    names = [str(label) for label in labels]
    scanned = [as_scanned(d) for d in digits]
    m = record_measurements(
        FOLDER, predictor, scanned, names, train_seconds=train_seconds, latency_image=on_paper(digits[0])
    )
    on_paper_accuracy = heldout_accuracy(predictor, [on_paper(d) for d in digits], names, batch_size=32)
    print(
        f"digits: held-out accuracy {m['accuracy']:.4f} as scanned, {on_paper_accuracy:.4f} on paper "
        f"({len(heldout)} digits); latency {m['latency_ms']:.2f} ms; bf16 agrees with fp32 on "
        f"{m['bf16_agreement']:.2%}, latency {m['bf16_latency_ms']:.2f} ms"
    )


if __name__ == "__main__":
    main()
