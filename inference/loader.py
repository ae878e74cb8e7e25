"""Loads a model folder's predictor once and runs it: one batch at a time, on its own thread."""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import pathlib
import sys
import time
from dataclasses import dataclass
from typing import Any

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

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.manifest.name}"

    def run(self, inputs: list[dict[str, Any]]) -> list[tuple[Any, float]]:
        """Predicts a batch; returns (output or the exception it raised, seconds) per input.

        Each prediction's time is its fair share of the batch it ran in. If a batch fails, its
        inputs run again one at a time so one bad input cannot fail the others.
        """
        with autocast(self.precision, self.manifest.hardware):
            return self._run(inputs)

    def _run(self, inputs: list[dict[str, Any]]) -> list[tuple[Any, float]]:
        batch_fn = getattr(self.predictor, "predict_batch", None)
        if batch_fn is not None and len(inputs) > 1:
            started = time.perf_counter()
            try:
                outputs = batch_fn(inputs)
                if len(outputs) != len(inputs):
                    raise RuntimeError(f"predict_batch returned {len(outputs)} outputs for {len(inputs)} inputs")
                share = (time.perf_counter() - started) / len(inputs)
                return [(_jsonable(out), share) for out in outputs]
            except Exception:
                log.exception("batch of %d failed on %s; retrying one at a time", len(inputs), self.ref)
        return [self._run_one(kwargs) for kwargs in inputs]

    def _run_one(self, kwargs: dict[str, Any]) -> tuple[Any, float]:
        started = time.perf_counter()
        try:
            output: Any = _jsonable(self.predictor.predict(**kwargs))
        except Exception as exc:  # noqa: BLE001 - a predictor's error becomes a failed prediction
            log.warning("prediction failed on %s: %r", self.ref, exc)
            output = exc
        return output, time.perf_counter() - started


def load(manifest: Manifest, owner: str, *, trust_precision: bool = False) -> LoadedModel:
    """Imports the predictor by path and runs its setup(); blocking, so call it off the loop."""
    precision, refused = settle(manifest, trust=trust_precision)
    if refused:
        log.warning("%s runs in fp32: %s", manifest.name, refused)
    # One module per loaded version: two versions of a model (or two servers in one process) must
    # not replace each other's module.
    module_name = f"modelfolio_model_{manifest.name}_{manifest.version[:12]}_{next(_loads)}"
    spec = importlib.util.spec_from_file_location(module_name, manifest.predictor_file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {manifest.predictor_file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    predictor = getattr(module, manifest.predictor_class)()
    predictor.setup()
    return LoadedModel(manifest, owner, predictor, precision)


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
