"""A model folder: `manifest.toml` (what the owner writes) + `predict.py` (the predictor)."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from inference.precision import PRECISIONS
from inference.schema import InputSchema, read_schema

MODELS_DIR = Path(__file__).parent / "models"


@dataclass(frozen=True)
class Example:
    input: dict[str, Any]  # file inputs are paths relative to the model folder
    expected: str | None = None


@dataclass(frozen=True)
class Manifest:
    folder: Path
    name: str
    title: str
    description: str
    price_per_second: Decimal  # USD per second of predict_time
    hardware: str
    listed: bool
    max_batch_size: int
    batch_window_ms: float
    max_queue: int
    batch_buckets: tuple[int, ...]  # fixed batch sizes a batch is padded up to; () for none
    predictor: str  # "predict.py:Predictor", as in cog.yaml
    precision: str  # "fp32", or "bf16"/"fp16" once checked against fp32 (see precision.py)
    measured: dict[str, Any]  # accuracy, heldout_size, latency_ms, train_seconds: written by train.py
    examples: list[Example] = field(default_factory=list)
    schema: InputSchema = field(default_factory=InputSchema)
    version: str = ""

    @property
    def predictor_file(self) -> Path:
        return self.folder / self.predictor.split(":")[0]

    @property
    def predictor_class(self) -> str:
        return self.predictor.split(":")[1]


def load_manifest(folder: Path) -> Manifest:
    path = folder / "manifest.toml"
    with path.open("rb") as f:
        raw = tomllib.load(f)
    batching = raw.get("batching", {})
    predictor = raw.get("predictor", "predict.py:Predictor")
    precision = raw.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise ValueError(f"{path}: precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    try:
        price = Decimal(str(raw["price_per_second"]))
        manifest = Manifest(
            folder=folder,
            name=raw.get("name", folder.name),
            title=raw["title"],
            description=raw.get("description", ""),
            price_per_second=price,
            hardware=raw.get("hardware", "cpu"),
            listed=bool(raw.get("listed", True)),
            max_batch_size=int(batching.get("max_batch_size", 1)),
            batch_window_ms=_window(path, batching.get("window_ms", 0)),
            max_queue=int(batching.get("max_queue", 64)),
            batch_buckets=_buckets(path, batching.get("buckets", []), int(batching.get("max_batch_size", 1))),
            predictor=predictor,
            precision=precision,
            measured=dict(raw.get("measured", {})),
            examples=[Example(e["input"], e.get("expected")) for e in raw.get("examples", [])],
        )
    except KeyError as exc:
        raise ValueError(f"{path}: missing required key {exc}") from None
    schema = read_schema(manifest.predictor_file, manifest.predictor_class)
    return replace(manifest, schema=schema, version=_version_of(folder))


MAX_WINDOW_MS = 2.0  # longer, and every batch's requests pay it, as TorchServe's and Ray's users found


def _window(path: Path, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw <= MAX_WINDOW_MS:
        raise ValueError(f"{path}: [batching] window_ms must be a number from 0 to {MAX_WINDOW_MS:g} "
                         f"(milliseconds), got {raw!r}")
    return float(raw)


def _buckets(path: Path, raw: Any, max_batch_size: int) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in raw):
        raise ValueError(f"{path}: [batching] buckets must be a list of positive batch sizes, e.g. [1, 8, 32]")
    buckets = tuple(sorted(set(raw)))
    if buckets and buckets[-1] < max_batch_size:
        raise ValueError(f"{path}: [batching] buckets end at {buckets[-1]}, below max_batch_size "
                         f"{max_batch_size}: a full batch would have no bucket")
    return buckets


def discover(models_dir: Path = MODELS_DIR) -> list[Manifest]:
    """Every model folder under `models_dir`, sorted by name."""
    return [load_manifest(p.parent) for p in sorted(models_dir.glob("*/manifest.toml"))]


def _version_of(folder: Path) -> str:
    """A content hash of the folder's code and weights: a new version whenever either changes."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".pt") and "__pycache__" not in path.parts:
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
