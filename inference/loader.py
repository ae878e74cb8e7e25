"""Loads a model folder's predictor once and runs it: one batch at a time, on its own thread.

`runtime = "torch"` (the default): predict.py's Predictor, set up, runs the model. `runtime =
"onnx"`: the same Predictor, never set up, gives its preprocess and postprocess, and ONNX
Runtime runs the exported graph between them (ort.py); torch is never imported for it.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import logging
import pathlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inference.errors import ConfigError
from inference.files import data_url_of
from inference.manifest import Manifest
from inference.precision import autocast, settle
from inference.predictor import BasePredictor, Path

log = logging.getLogger("inference")
_loads = itertools.count()


@dataclass
class LoadedModel:
    manifest: Manifest
    owner: str
    predictor: BasePredictor
    precision: str = "fp32"  # what it runs in: the manifest's, once checked (precision.py)
    batch_cap: int = 0  # the largest batch the batcher may send; lowered after out-of-memory

    def __post_init__(self) -> None:
        self.batch_cap = self.batch_cap or self.manifest.max_batch_size

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.manifest.name}"

    @property
    def prepares(self) -> bool:
        """Whether the predictor splits its work: `preprocess(**inputs)` per prediction, on a
        decode thread while other batches run, then `predict_prepared(list)` per batch."""
        return hasattr(self.predictor, "preprocess")

    def prepare(self, inputs: dict[str, Any]) -> Any:
        """What run() takes for one prediction: its preprocessed form, or its inputs as they are.
        Blocking, so call it off the loop; a predictor's error names the input's problem."""
        return self.predictor.preprocess(**inputs) if self.prepares else inputs  # type: ignore[attr-defined]

    def run(self, items: list[Any]) -> list[tuple[Any, float]]:
        """Predicts a batch of prepare()'s results; returns (output or the exception it raised,
        seconds) per item.

        Each prediction's time is its fair share of the batch it ran in (padding included, so a
        padded batch costs no one more than an unpadded one would). A batch that runs out of
        device memory runs again as two halves, and later batches are held to half the size that
        did not fit. A batch that fails otherwise runs again one item at a time, so one bad input
        cannot fail the others.
        """
        if self.manifest.runtime != "torch":  # an ONNX variant is its own graph: no autocast
            return self._run(items)
        with autocast(self.precision):
            return self._run(items)

    def _run(self, items: list[Any]) -> list[tuple[Any, float]]:
        batch_fn = getattr(self.predictor, "predict_prepared" if self.prepares else "predict_batch", None)
        if batch_fn is None or (len(items) == 1 and not self.prepares and not self.manifest.batch_buckets):
            return [self._run_one(item) for item in items]
        started = time.perf_counter()
        try:
            return self._run_batch(batch_fn, items)
        except Exception as exc:
            if len(items) == 1:  # a batch of one failing is that prediction failing: no second try
                log.warning("prediction failed on %s: %r", self.ref, exc)
                return [(exc, time.perf_counter() - started)]
            if _out_of_memory(exc):
                half = len(items) // 2
                self.batch_cap = min(self.batch_cap, half)
                log.warning(
                    "%s ran out of device memory on a batch of %d: halving it (batches of "
                    "at most %d from now on)",
                    self.ref,
                    len(items),
                    self.batch_cap,
                )
                _release_device_memory()
                return self._run(items[:half]) + self._run(items[half:])
            log.exception("batch of %d failed on %s; retrying one at a time", len(items), self.ref)
            return [self._run_one(item) for item in items]

    def _run_batch(
        self, batch_fn: Callable[[list[Any]], list[Any]], inputs: list[Any]
    ) -> list[tuple[Any, float]]:
        # Padded to a fixed batch size, if the manifest has buckets: compiled graphs and CUDA
        # graphs are built per shape, once, at warm-up.
        size = next((b for b in self.manifest.batch_buckets if b >= len(inputs)), len(inputs))
        padded = inputs + [inputs[-1]] * (size - len(inputs))
        started = time.perf_counter()
        outputs = batch_fn(padded)
        if len(outputs) != len(padded):
            raise RuntimeError(
                f"{batch_fn.__name__} returned {len(outputs)} outputs for {len(padded)} inputs"
            )
        share = (time.perf_counter() - started) / len(padded)
        return [(_jsonable(out), share) for out in outputs[: len(inputs)]]

    def _run_one(self, item: Any) -> tuple[Any, float]:
        started = time.perf_counter()
        try:
            if self.prepares:
                output: Any = _jsonable(self.predictor.predict_prepared([item])[0])  # type: ignore[attr-defined]
            else:
                output = _jsonable(self.predictor.predict(**item))
        except Exception as exc:
            log.warning("prediction failed on %s: %r", self.ref, exc)
            output = exc
        return output, time.perf_counter() - started


def load(
    manifest: Manifest, owner: str, *, trust_precision: bool = False, threads: int | None = None
) -> LoadedModel:
    """Imports the predictor by path and runs its setup() (torch), or opens its graph (onnx);
    blocking, so call it off the loop. `threads`: the server's --threads, for torch's or ONNX
    Runtime's intra-op pool."""
    if manifest.runtime == "onnx":
        return _load_onnx(manifest, owner, trust_precision=trust_precision, threads=threads)
    if threads:
        import torch

        torch.set_num_threads(threads)
    precision, refused = settle(
        manifest.precision, manifest.measured, manifest.version, trust=trust_precision
    )
    if refused:
        log.warning("%s runs in fp32: %s", manifest.name, refused)
    predictor = _construct(manifest)
    if hasattr(predictor, "preprocess") and not hasattr(predictor, "predict_prepared"):
        raise TypeError(
            f"{manifest.predictor_file.name}: {manifest.predictor_class} has preprocess() "
            "but no predict_prepared(items) to run what it returns"
        )
    predictor.setup()
    return LoadedModel(manifest, owner, predictor, precision)


def _load_onnx(manifest: Manifest, owner: str, *, trust_precision: bool, threads: int | None) -> LoadedModel:
    from inference import ort

    imports = _module_level_imports(manifest.predictor_file) & {"torch", "torchvision"}
    if imports:
        raise ConfigError(
            f"{manifest.predictor_file} imports {' and '.join(sorted(imports))} at module level; with "
            'runtime = "onnx" the server never imports them: move that import into setup(), '
            "which only the torch runtime calls"
        )
    had_torch = "torch" in sys.modules
    predictor = _construct(manifest)
    if not had_torch and "torch" in sys.modules:
        log.warning("%s imported torch although it runs on ONNX Runtime", manifest.predictor_file)
    served, precision = ort.wrap(manifest, predictor, threads=threads, trust_precision=trust_precision)
    return LoadedModel(manifest, owner, served, precision)


def _construct(manifest: Manifest) -> Any:
    """predict.py imported by path, and its predictor class instantiated (not set up)."""
    # One module per loaded version: two versions of a model (or two servers in one process) must
    # not replace each other's module.
    module_name = f"modelfolio_model_{manifest.name}_{manifest.version[:12]}_{next(_loads)}"
    spec = importlib.util.spec_from_file_location(module_name, manifest.predictor_file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {manifest.predictor_file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return getattr(module, manifest.predictor_class)()


def _module_level_imports(path: pathlib.Path) -> set[str]:
    """The top-level packages a file imports when it is imported (not those inside functions)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def _out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA, MPS or CPU allocators), known by name: no torch import
    for models without torch."""
    return any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__)


def _release_device_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _jsonable(output: Any) -> Any:
    """The output as JSON: files a predictor returns (Cog's `Path`) become data URLs.

    Checked here, in the model's thread, so a bad output fails its prediction with a clear error
    rather than the poll that would serialize it.
    """
    output = _inline_files(output)
    try:
        json.dumps(output)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the model's output is not JSON-serializable: {exc}") from None
    return output


def _inline_files(value: Any) -> Any:
    if isinstance(value, pathlib.Path):
        url = data_url_of(value)
        if isinstance(value, Path):  # a temporary file the predictor made for this output
            value.unlink(missing_ok=True)
        return url
    if isinstance(value, list | tuple):
        return [_inline_files(v) for v in value]
    if isinstance(value, dict):
        return {k: _inline_files(v) for k, v in value.items()}
    return value
