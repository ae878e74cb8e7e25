"""The same model under Cog's own server (cog 0.23.1, coglet): an async predictor, so that
COG_MAX_CONCURRENCY slots can be set (a sync one answers 409 to every request past the first).

    COG_PREDICT_TYPE_STUB=benchmarks/others/cog_predict.py:Predictor COG_MAX_CONCURRENCY=32 \
    BENCH_MODEL=resnet18 PORT=8020 python -m cog.server.http --host 127.0.0.1
"""

from __future__ import annotations

import os

import PIL.Image
import torch
from cog import BasePredictor, Input, Path

from benchmarks import resnet


class Predictor(BasePredictor):
    def setup(self) -> None:
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
        self.model = resnet.build(os.environ.get("BENCH_MODEL", "resnet18"))

    async def predict(self, image: Path = Input(description="A photo")) -> dict:  # noqa: B008
        with PIL.Image.open(image) as opened:
            return resnet.classify(self.model, [opened])[0]
