"""ResNet-18 (random, seeded weights) for the serving benchmark: top-5 ImageNet classes."""

from __future__ import annotations

import numpy as np

from benchmarks import resnet
from inference.predictor import BasePredictor, Image, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.model = resnet.build("resnet18")

    def predict(
        self,
        image: Image = Input(description="A photo; it is resized to 256 and centre-cropped to 224."),
    ) -> dict:
        return self.predict_prepared([self.preprocess(image)])[0]

    def preprocess(self, image: Image) -> np.ndarray:
        """Resize and crop, on the server's decode thread while the model runs other batches."""
        return resnet.crop(image)

    def predict_prepared(self, crops: list[np.ndarray]) -> list[dict]:
        return resnet.classify_crops(self.model, crops)
