"""A model folder: `manifest.toml` (what the owner writes) + `predict.py` (the predictor), and
for `runtime = "onnx"` the exported graphs beside them (model.onnx, model.int8.onnx, ...)."""

from __future__ import annotations

import functools
import hashlib
import re
import tomllib
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from inference.errors import ConfigError
from inference.precision import PRECISIONS, RUNTIMES
from inference.schema import InputSchema, read_schema

MODELS_DIR = Path(__file__).parent / "models"
# The graph each ONNX precision runs: `python -m inference export` writes them.
ONNX_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
_HOOK = re.compile(r"[\w./-]+\.py:\w+")


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
    precision: str  # "fp32", or "bf16"/"fp16" (torch), "int8"/"fp16" (onnx) once checked (precision.py)
    measured: dict[str, Any]  # accuracy, heldout_size, latency_ms, train_seconds: written by train.py
    examples: list[Example] = field(default_factory=list)
    schema: InputSchema = field(default_factory=InputSchema)
    version: str = ""
    runtime: str = "torch"  # "torch": predict.py runs the model; "onnx": ONNX Runtime runs model.onnx
    # [export]: "file.py:function" hooks returning the PIL images that `python -m inference export`
    # calibrates INT8 on and measures agreement on (held out: never calibrated on).
    export_hooks: dict[str, str] = field(default_factory=dict)

    @property
    def predictor_file(self) -> Path:
        return self.folder / self.predictor.split(":")[0]

    @property
    def predictor_class(self) -> str:
        return self.predictor.split(":")[1]

    def onnx_file(self, precision: str = "fp32") -> Path:
        return self.folder / ONNX_FILES[precision]


def load_manifest(folder: Path) -> Manifest:
    path = folder / "manifest.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: a model folder needs a manifest.toml") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    batching = raw.get("batching", {})
    if not isinstance(batching, dict):
        raise ConfigError(f"{path}: [batching] must be a table")
    runtime = raw.get("runtime", "torch")
    if runtime not in RUNTIMES:
        raise ConfigError(f"{path}: runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    precision = raw.get("precision", "fp32")
    if precision not in PRECISIONS[runtime]:
        raise ConfigError(
            f"{path}: precision {precision!r} is not one of {', '.join(PRECISIONS[runtime])} "
            f"(runtime {runtime})"
        )
    hooks = raw.get("export", {})
    if not isinstance(hooks, dict) or not all(
        key in ("calibration", "heldout") and isinstance(v, str) and _HOOK.fullmatch(v)
        for key, v in hooks.items()
    ):
        raise ConfigError(
            f'{path}: [export] takes calibration and heldout, each "file.py:function", got {hooks!r}'
        )
    predictor = raw.get("predictor", "predict.py:Predictor")
    if not isinstance(predictor, str) or not re.fullmatch(r"[\w./-]+\.py:\w+", predictor):
        raise ConfigError(f"{path}: predictor must read 'file.py:ClassName', got {predictor!r}")
    max_batch_size = _count(path, batching, "max_batch_size", 1)
    try:
        manifest = Manifest(
            folder=folder,
            name=raw.get("name", folder.name),
            title=raw["title"],
            description=raw.get("description", ""),
            price_per_second=_price(path, raw["price_per_second"]),
            hardware=raw.get("hardware", "cpu"),
            listed=bool(raw.get("listed", True)),
            max_batch_size=max_batch_size,
            batch_window_ms=_window(path, batching.get("window_ms", 0)),
            max_queue=_count(path, batching, "max_queue", 64),
            batch_buckets=_buckets(path, batching.get("buckets", []), max_batch_size),
            predictor=predictor,
            precision=precision,
            measured=dict(raw.get("measured", {})),
            examples=[Example(e["input"], e.get("expected")) for e in raw.get("examples", [])],
            runtime=runtime,
            export_hooks=dict(hooks),
        )
    except KeyError as exc:
        raise ConfigError(f"{path}: missing required key {exc}") from None
    schema = read_schema(manifest.predictor_file, manifest.predictor_class)
    return replace(manifest, schema=schema, version=_version_of(folder))


def _price(path: Path, raw: Any) -> Decimal:
    try:
        price = Decimal(str(raw)) if isinstance(raw, str | int) and not isinstance(raw, bool) else None
    except InvalidOperation:
        price = None
    if price is None or not price.is_finite() or price < 0:
        raise ConfigError(f'{path}: price_per_second must be a decimal string like "0.0005", got {raw!r}')
    return price


def _count(path: Path, table: dict[str, Any], key: str, default: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{path}: [batching] {key} must be a whole number of at least 1, got {value!r}")
    return value


MAX_WINDOW_MS = 2.0  # longer, and every batch's requests pay it, as TorchServe's and Ray's users found


def _window(path: Path, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw <= MAX_WINDOW_MS:
        raise ConfigError(
            f"{path}: [batching] window_ms must be a number from 0 to {MAX_WINDOW_MS:g} "
            f"(milliseconds), got {raw!r}"
        )
    return float(raw)


def _buckets(path: Path, raw: Any, max_batch_size: int) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in raw
    ):
        raise ConfigError(
            f"{path}: [batching] buckets must be a list of positive batch sizes, e.g. [1, 8, 32]"
        )
    buckets = tuple(sorted(set(raw)))
    if buckets and buckets[-1] < max_batch_size:
        raise ConfigError(
            f"{path}: [batching] buckets end at {buckets[-1]}, below max_batch_size "
            f"{max_batch_size}: a full batch would have no bucket"
        )
    return buckets


def discover(models_dir: Path = MODELS_DIR) -> list[Manifest]:
    """Every model folder under `models_dir`, sorted by name."""
    return [load_manifest(p.parent) for p in sorted(models_dir.glob("*/manifest.toml"))]


def _version_of(folder: Path) -> str:
    """A content hash of the folder's code and weights (PyTorch's and the exported graphs): a new
    version whenever either changes."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".pt", ".onnx") and "__pycache__" not in path.parts:
            stat = path.stat()
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(_digest_of(path, stat.st_size, stat.st_mtime_ns))
    return digest.hexdigest()


@functools.lru_cache(maxsize=256)
def _digest_of(path: Path, size: int, mtime_ns: int) -> bytes:
    # Keyed by size and mtime too, so a changed file is read again: a ResNet-50 graph is 100 MB,
    # and start-up reads every manifest twice (once to refuse a broken folder, once to serve).
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").digest()
