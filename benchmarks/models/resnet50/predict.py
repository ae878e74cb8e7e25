"""torchvision ResNet-50 (random, seeded weights) for the serving benchmark: top-5 ImageNet
classes. The same file serves the PyTorch rows and, with `runtime = "onnx"`, the ONNX ones."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks import imagenet
from benchmarks.imagenet import calibration_images, heldout_images
from inference.predictor import BasePredictor, Image, Input

__all__ = ["Predictor", "calibration_images", "heldout_images"]  # the last two: [export] hooks


class Predictor(BasePredictor):
    def setup(self) -> None:
        from benchmarks import resnet  # torch and torchvision: only the PyTorch runtime needs them

        self.model = resnet.build("resnet50")

    def predict(
        self,
        image: Image = Input(description="A photo; it is resized to 256 and centre-cropped to 224."),
    ) -> dict:
        return self.predict_prepared([self.preprocess(image)])[0]

    def preprocess(self, image: Image) -> np.ndarray:
        """Resize and crop, on the server's decode thread while the model runs other batches."""
        return imagenet.crop(image)

    def postprocess(self, logits: np.ndarray) -> dict[str, Any]:
        return imagenet.top5(logits)

    def predict_prepared(self, crops: list[np.ndarray]) -> list[dict]:
        from benchmarks import resnet

        return resnet.classify_crops(self.model, crops)
