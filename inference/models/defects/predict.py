"""Surface-defect classifier: a small CNN that tells an `ok` surface from one with a scratch,
a spot (stain) or a crack. The whole picture is looked at in gray, at 128x128 pooled to 64x64."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from inference.predictor import BasePredictor, Image, Input

LABELS = ["ok", "scratch", "spot", "crack"]
WEIGHTS = Path(__file__).with_name("weights.pt")
INPUT_SIDE = 64


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


def output_of(logits: np.ndarray) -> dict[str, Any]:
    """One picture's logits -> its label, confidence and every class's probability, best first."""
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
    `python -m inference export defects` exports."""

    def setup(self) -> None:
        import torch  # here, not at the top: the ONNX runtime imports this file but never torch

        from inference.models.defects.network import DefectNet

        self.model = DefectNet()
        self.model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
        self.model.eval()

    def predict(
        self,
        image: Image = Input(
            description="A close-up photo of a surface (metal, fabric), framed so that a "
            "defect would span a good part of the picture; color or gray, any size."
        ),
    ) -> dict[str, Any]:
        return self.predict_prepared([self.preprocess(image)])[0]

    def preprocess(self, image: Image) -> np.ndarray:
        return to_input(image)

    def postprocess(self, logits: np.ndarray) -> dict[str, Any]:
        return output_of(logits)

    def predict_prepared(self, pictures: list[np.ndarray]) -> list[dict[str, Any]]:
        import torch

        with torch.inference_mode():
            logits = self.model(torch.from_numpy(np.stack(pictures))).float().numpy()
        return [self.postprocess(row) for row in logits]

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.predict_prepared([self.preprocess(**item) for item in inputs])
