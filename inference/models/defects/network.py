"""The surface-defect classifier's network, in PyTorch: what train.py trains and `python -m
inference export defects` exports. Only the torch runtime imports it."""

from __future__ import annotations

import torch
from torch import nn

from inference.models.defects.predict import LABELS


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
