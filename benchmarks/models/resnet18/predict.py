"""ResNet-18 (random, seeded weights) for the serving benchmark: top-5 ImageNet classes."""

from __future__ import annotations

from benchmarks import resnet
from inference.predictor import BasePredictor, Image, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.model = resnet.build("resnet18")

    def predict(
        self,
        image: Image = Input(description="A photo; it is resized to 256 and centre-cropped to 224."),
    ) -> dict:
        return self.predict_batch([{"image": image}])[0]

    def predict_batch(self, inputs: list[dict]) -> list[dict]:
        return resnet.classify(self.model, [item["image"] for item in inputs])
