"""What the train.py scripts share: a deterministic fit, measuring through the real Predictor
on the server's image path (PNG in, PIL out), and the `[measured]` table of a manifest."""

from __future__ import annotations

import argparse
import datetime
import io
import math
import random
import statistics
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from inference.manifest import load_manifest
from inference.precision import agreement, autocast, measured_keys

_MEASURED_HEADER = "[measured]"


class BatchPredictor(Protocol):
    def predict(self, image: Image.Image) -> dict[str, Any]: ...

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]: ...


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)


def fit(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 3e-3,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    seed: int = 0,
) -> torch.nn.Module:
    """Trains `model` on (x, y) with AdamW and a one-cycle schedule; returns it in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(x) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            inputs = x[batch] if augment is None else augment(x[batch], generator)
            loss = torch.nn.functional.cross_entropy(model(inputs), y[batch], label_smoothing=0.05)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def png_roundtrip(image: Image.Image) -> Image.Image:
    """Encodes to PNG and decodes again, as an upload reaches the predictor."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.seek(0)
    decoded = Image.open(buffer)
    decoded.load()
    return decoded


def heldout_accuracy(
    predictor: BatchPredictor,
    images: Sequence[Image.Image],
    labels: Sequence[str],
    batch_size: int,
) -> float:
    correct = 0
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        outputs = predictor.predict_batch([{"image": png_roundtrip(image)} for image in chunk])
        expected = labels[start : start + batch_size]
        correct += sum(out["label"] == want for out, want in zip(outputs, expected, strict=True))
    return correct / len(images)


def median_latency_ms(
    predictor: BatchPredictor, image: Image.Image, runs: int = 50, precision: str = "fp32"
) -> float:
    image = png_roundtrip(image)
    with autocast(precision):
        predictor.predict(image)  # the first call pays for lazy initialisation
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            predictor.predict(image)
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000.0


def served_latency_ms(folder: Path, image: Image.Image, runs: int = 50) -> float:
    """One picture's time through the model as the server runs it (its manifest's runtime and
    precision): preprocessing and the model, as the page's latency figure means."""
    from inference.loader import load

    model = load(load_manifest(folder), "measure")
    inputs = {"image": png_roundtrip(image)}
    model.run([model.prepare(inputs)])  # the first call pays for lazy initialisation
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        model.run([model.prepare(inputs)])
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000.0


def measure_precision(
    folder: Path,
    predictor: BatchPredictor,
    images: Sequence[Image.Image],
    precision: str = "bf16",
    batch_size: int = 32,
) -> dict[str, Any]:
    """The `[measured]` entries that let the server run this model in `precision` (precision.py):
    top-1 agreement with fp32 on the held-out images, the version it holds for, and the latency."""
    batches = [
        [{"image": png_roundtrip(image)} for image in images[start : start + batch_size]]
        for start in range(0, len(images), batch_size)
    ]
    share, size = agreement(predictor.predict_batch, batches, precision)
    agreement_key, size_key, version_key = measured_keys(precision)
    return {
        agreement_key: math.floor(share * 10_000) / 10_000,  # never rounded up past the 99 % bar
        size_key: size,
        version_key: load_manifest(folder).version[:16],  # the weights and code just measured
        f"{precision}_latency_ms": round(median_latency_ms(predictor, images[0], precision=precision), 2),
    }


def measure_only(prog: str, argv: list[str] | None) -> bool:
    """The train scripts' one option: `--measure` measures the shipped weights again, no training."""
    parser = argparse.ArgumentParser(prog=prog, description="Trains the model and measures it.")
    parser.add_argument(
        "--measure",
        action="store_true",
        help="measure the shipped weights again (accuracy, latency, bf16 agreement); no training",
    )
    return bool(parser.parse_args(argv).measure)


def record_measurements(
    folder: Path,
    predictor: BatchPredictor,
    images: Sequence[Image.Image],
    labels: Sequence[str],
    *,
    train_seconds: float,
    latency_image: Image.Image,
) -> dict[str, Any]:
    """Measures on the held-out images through the real predictor and writes the manifest's
    `[measured]` table: accuracy, latency as served, and bf16's agreement with fp32 (precision.py)."""
    accuracy = heldout_accuracy(predictor, images, labels, batch_size=32)
    latency = served_latency_ms(folder, latency_image)
    # What `python -m inference export` measured stays: its own version check says whether it
    # still holds for these weights and this code.
    exported = {k: v for k, v in earlier_measured(folder / "manifest.toml").items() if k.startswith("onnx_")}
    measured = {
        "accuracy": round(accuracy, 4),
        "heldout_size": len(images),
        "train_seconds": round(train_seconds, 1),
        "latency_ms": round(latency, 2),
        **measure_precision(folder, predictor, images),
        "measured_on": today(),
    }
    write_measured(folder / "manifest.toml", measured | exported)
    return measured


def earlier_measured(manifest: Path) -> dict[str, Any]:
    with manifest.open("rb") as f:
        return dict(tomllib.load(f).get("measured", {}))


def write_measured(manifest: Path, measured: dict[str, Any]) -> None:
    """Replaces the `[measured]` table, which each manifest keeps last, and nothing else."""
    text = manifest.read_text()
    head = text.split("\n" + _MEASURED_HEADER, 1)[0].rstrip("\n")
    lines = [f"{key} = {_toml_value(value)}" for key, value in measured.items()]
    note = (
        "# written by train.py and `python -m inference export`, measured through the real Predictor\n"
        "# on held-out images"
    )
    manifest.write_text(f"{head}\n\n{_MEASURED_HEADER}\n{note}\n" + "\n".join(lines) + "\n")


def today() -> str:
    return datetime.date.today().isoformat()


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)
