"""The predictor interface, in Cog's shape.

A Cog `predict.py` runs here with its import line changed from `from cog import ...` to
`from inference.predictor import ...`. The input schema is read from the source of `predict`
(see schema.py), so `Input(...)` arguments must be literals, as Cog itself expects.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

import PIL.Image

__all__ = ["BasePredictor", "FieldInfo", "Image", "ImageBytes", "Input", "Path"]

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()


class BasePredictor:
    """`setup()` runs once at start; `predict(**inputs)` runs per prediction.

    A predictor that can batch also defines `predict_batch(self, inputs: list[dict]) -> list`,
    which takes one validated keyword dict per prediction and returns one output each, in order.

    One that wants its per-input work (resizing, cropping) done while the model runs the previous
    batch defines, instead, `preprocess(self, **inputs) -> item` and `predict_prepared(self,
    items: list) -> list`: the server calls preprocess on a decode thread as each request arrives
    and predict_prepared on the model's thread, per batch. `predict` still declares the inputs
    (the schema is read from it). Keep torch out of preprocess (use PIL and numpy): torch's
    OpenMP threads belong to the model's thread.
    """

    def setup(self) -> None:
        pass

    def predict(self, *args: Any, **kwargs: Any) -> Any:  # (*Any, **Any): any signature overrides it
        raise NotImplementedError


class Path(pathlib.PosixPath):
    """A file input: the server writes the uploaded bytes to a temporary file."""


# An image input: the server decodes and checks it (size, pixel count, type) off the event
# loop before the prediction is accepted, and passes a PIL image in RGB or L mode.
Image = PIL.Image.Image


class ImageBytes(bytes):
    """An image input as its encoded bytes, for predictors that decode a whole batch at once on
    the GPU (`inference.images.decode`). The server checks the header first (an image, a known
    format, within the pixel limit) but leaves the pixels undecoded."""

    format: str  # "JPEG", "PNG", ...
    width: int
    height: int
    orientation: int  # EXIF orientation, 1 when upright


@dataclass(frozen=True)
class FieldInfo:
    default: Any = MISSING
    description: str | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    regex: str | None = None
    choices: list[Any] | None = None


def Input(
    default: Any = MISSING,
    *,
    description: str | None = None,
    ge: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    regex: str | None = None,
    choices: list[Any] | None = None,
    deprecated: bool | None = None,
) -> Any:
    return FieldInfo(default, description, ge, le, min_length, max_length, regex, choices)
