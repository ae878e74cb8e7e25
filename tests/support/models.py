"""The shipped models' predictors, loaded by file path as the server loads them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from PIL import Image

from inference.manifest import Manifest


def load_predictor(manifest: Manifest) -> Any:
    spec = importlib.util.spec_from_file_location(f"shipped_{manifest.name}_predict", manifest.predictor_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    predictor = getattr(module, manifest.predictor_class)()
    predictor.setup()
    return predictor


def open_image(path: Path) -> Image.Image:
    image = Image.open(path)
    image.load()
    return image if image.mode in ("RGB", "L") else image.convert("RGB")
