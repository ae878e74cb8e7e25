"""Handwritten digit recognizer: a small CNN over scikit-learn's 8x8 digit format.

Any picture of one digit (a phone photo, a drawing on white paper, the 8x8 dataset itself) is
brought to that format first: ink made high, cropped, stroke width and size normalised, centred,
counted in blocks to 0..16, as the dataset's authors did with their 32x32 bitmaps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageFilter

from inference.predictor import BasePredictor, Image, Input

LABELS = [str(d) for d in range(10)]
WEIGHTS = Path(__file__).with_name("weights.pt")

_WORK_SIDE = 256  # larger pictures are shrunk first: faster, and it averages away sensor noise
_CANVAS = 64  # twice the dataset's 32x32 bitmaps, so strokes thicken in half-pixel steps
_GLYPH = 48  # glyph size while its stroke is normalised, leaving room to grow
_INK_SHARE = (0.20, 0.40)  # the dataset's digits cover 25-36% of their bitmap, whoever wrote them
_STROKE_STEPS = 10


def to_digit(image: PILImage.Image) -> np.ndarray:
    """Any picture of one digit -> 8x8 float32 block counts in 0..16, as in `load_digits()`."""
    ink = _ink_of(image)
    box = _box_of(ink > 0.5)
    if box is None:
        return np.zeros((8, 8), np.float32)
    glyph = _fit(ink[box], _GLYPH, threshold=0.25)  # low, so thin pen lines do not break up
    glyph = _normalise_stroke(np.pad(glyph, (_CANVAS - _GLYPH) // 2))
    box = _box_of(glyph)
    if box is None:
        return np.zeros((8, 8), np.float32)
    canvas = _centre(_fit(glyph[box].astype(np.float32), _CANVAS, threshold=0.5))
    blocks: np.ndarray = canvas.reshape(8, _CANVAS // 8, 8, _CANVAS // 8).mean(axis=(1, 3))
    return (blocks * 16.0).astype(np.float32)


def _ink_of(image: PILImage.Image) -> np.ndarray:
    """Ink in 0..1 (high = ink) whatever the paper: light paper is inverted, contrast stretched."""
    gray = image.convert("L")
    if max(gray.size) > _WORK_SIDE:
        gray.thumbnail((_WORK_SIDE, _WORK_SIDE), PILImage.Resampling.BOX)
    pixels = np.asarray(gray, dtype=np.float32) / 255.0
    paper = float(np.median(_border_of(pixels)))
    if paper > 0.5:
        pixels, paper = 1.0 - pixels, 1.0 - paper
    top = float(np.quantile(pixels, 0.995)) if pixels.size > 400 else float(pixels.max())
    if top - paper < 0.1:
        return np.zeros_like(pixels)
    ink: np.ndarray = np.clip((pixels - paper) / (top - paper), 0.0, 1.0)
    return ink


def _border_of(pixels: np.ndarray) -> np.ndarray:
    ring = max(1, min(pixels.shape) // 16)
    return np.concatenate(
        [
            pixels[:ring].ravel(),
            pixels[-ring:].ravel(),
            pixels[:, :ring].ravel(),
            pixels[:, -ring:].ravel(),
        ]
    )


def _box_of(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The box holding 99% of the ink, so a stray mark far away does not shrink the digit."""
    if mask.sum() == 0:
        return None
    return _span(mask.sum(axis=1)), _span(mask.sum(axis=0))


def _span(profile: np.ndarray) -> slice:
    mass = np.cumsum(profile) / profile.sum()
    first = int(np.searchsorted(mass, 0.005, side="right"))
    last = int(np.searchsorted(mass, 0.995))
    return slice(first, min(last, len(profile) - 1) + 1)


def _fit(ink: np.ndarray, side: int, threshold: float) -> np.ndarray:
    """Scales `ink` so its longer side is `side` pixels, keeping its shape; returns a bool mask."""
    height, width = ink.shape
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = PILImage.fromarray(ink.astype(np.float32)).resize(size, PILImage.Resampling.BILINEAR)
    return np.asarray(resized) > threshold


def _normalise_stroke(mask: np.ndarray) -> np.ndarray:
    """Thickens thin pen strokes and thins marker strokes toward the dataset's ink share."""
    image = PILImage.fromarray(mask.astype(np.uint8) * 255)
    for _ in range(_STROKE_STEPS):
        share = _ink_share(np.asarray(image) > 127)
        if share < _INK_SHARE[0]:
            image = image.filter(ImageFilter.MaxFilter(3))
        elif share > _INK_SHARE[1]:
            thinner = image.filter(ImageFilter.MinFilter(3))
            if not np.asarray(thinner).any():
                break
            image = thinner
        else:
            break
    return np.asarray(image) > 127


def _ink_share(mask: np.ndarray) -> float:
    box = _box_of(mask)
    if box is None:
        return 0.0
    rows, cols = box
    side = int(max(rows.stop - rows.start, cols.stop - cols.start))
    return float(mask.sum()) / side**2


def _centre(glyph: np.ndarray) -> np.ndarray:
    canvas = np.zeros((_CANVAS, _CANVAS), np.float32)
    height, width = glyph.shape
    top, left = (_CANVAS - height) // 2, (_CANVAS - width) // 2
    canvas[top : top + height, left : left + width] = glyph
    return canvas


def output_of(logits: np.ndarray) -> dict[str, Any]:
    """One digit's logits -> its label, confidence and every class's probability, best first."""
    exp = np.exp(logits.astype(np.float64) - logits.max())
    probabilities = exp / exp.sum()
    ranked = sorted(zip(LABELS, probabilities.tolist(), strict=True), key=lambda p: -p[1])
    return {
        "label": ranked[0][0],
        "confidence": round(ranked[0][1], 4),
        "probabilities": [{"label": label, "probability": round(p, 4)} for label, p in ranked],
    }


class Predictor(BasePredictor):
    """Served by PyTorch (setup + predict_prepared) or, with `runtime = "onnx"`, by ONNX Runtime
    running model.onnx between preprocess and postprocess: the network, `self.model`, is what
    `python -m inference export digits` exports."""

    def setup(self) -> None:
        import torch  # here, not at the top: the ONNX runtime imports this file but never torch

        from inference.models.digits.network import DigitNet

        self.model = DigitNet()
        self.model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
        self.model.eval()

    def predict(
        self,
        image: Image = Input(
            description="A picture of one handwritten digit, 0 to 9: dark ink on light paper "
            "or light on dark, any size; the digit should fill most of the frame."
        ),
    ) -> dict[str, Any]:
        return self.predict_prepared([self.preprocess(image)])[0]

    def preprocess(self, image: Image) -> np.ndarray:
        """(1, 8, 8) float32 block counts: the network's input for one picture."""
        return to_digit(image)[None]

    def postprocess(self, logits: np.ndarray) -> dict[str, Any]:
        return output_of(logits)

    def predict_prepared(self, digits: list[np.ndarray]) -> list[dict[str, Any]]:
        import torch

        with torch.inference_mode():
            logits = self.model(torch.from_numpy(np.stack(digits))).float().numpy()
        return [self.postprocess(row) for row in logits]

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.predict_prepared([self.preprocess(**item) for item in inputs])
