"""Surface-defect classifier: a small CNN that tells an `ok` surface from one with a scratch,
a spot (stain) or a crack. The whole picture is looked at in gray, at 128x128 pooled to 64x64."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from torch import nn

from inference.predictor import BasePredictor, Image, Input

LABELS = ["ok", "scratch", "spot", "crack"]
WEIGHTS = Path(__file__).with_name("weights.pt")
INPUT_SIDE = 64


def _block(inputs: int, outputs: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(),
    )


class DefectNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(2, 16, kernel=5, stride=2),
            nn.MaxPool2d(2),
            _block(16, 32),
            nn.MaxPool2d(2),
            _block(32, 64),
        )
        self.head = nn.Linear(2 * 64, len(LABELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x`: (N, 2, 64, 64) from `to_input`; returns logits."""
        features = self.features(x)
        # Max pooling finds a small defect anywhere; mean pooling describes the surface around it.
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        logits: torch.Tensor = self.head(pooled)
        return logits


def to_input(image: PILImage.Image) -> np.ndarray:
    """Any picture -> (2, 64, 64) float32: the darkest and the lightest pixel of each 2x2 cell
    of a 128x128 gray view, so a one-pixel line keeps its full contrast at half the size.

    The view is standardised (zero mean, unit spread) so exposure does not matter, and the whole
    frame is squeezed to a square rather than cropped, so a defect near an edge is still seen.
    """
    side = 2 * INPUT_SIDE
    gray = image.convert("L").resize((side, side), PILImage.Resampling.BOX)
    pixels = np.asarray(gray, dtype=np.float32) / 255.0
    pixels = (pixels - pixels.mean()) / (pixels.std() + 0.02)
    cells = pixels.reshape(INPUT_SIDE, 2, INPUT_SIDE, 2)
    return np.stack([cells.min(axis=(1, 3)), cells.max(axis=(1, 3))])


def _output_of(probabilities: torch.Tensor) -> dict[str, Any]:
    ranked = sorted(zip(LABELS, probabilities.tolist(), strict=True), key=lambda p: -p[1])
    return {
        "label": ranked[0][0],
        "confidence": round(ranked[0][1], 4),
        "probabilities": [{"label": label, "probability": round(p, 4)} for label, p in ranked],
    }


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.model = DefectNet()
        self.model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
        self.model.eval()

    def predict(  # type: ignore[override]
        self,
        image: Image = Input(
            description="A close-up photo of a surface (metal, fabric), framed so that a "
            "defect would span a good part of the picture; color or gray, any size."
        ),
    ) -> dict[str, Any]:
        return self.predict_batch([{"image": image}])[0]

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        pictures = np.stack([to_input(item["image"]) for item in inputs])
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(pictures))
            probabilities = torch.softmax(logits, dim=1)
        return [_output_of(row) for row in probabilities]
