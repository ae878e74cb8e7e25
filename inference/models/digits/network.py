"""The digit recognizer's network, in PyTorch: what train.py trains and `python -m inference export
digits` exports. Only the torch runtime imports it."""

from __future__ import annotations

import torch
from torch import nn

from inference.models.digits.predict import LABELS


class DigitNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(64 * 4 * 4, 64),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(64, len(LABELS)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x`: (N, 1, 8, 8) block counts in 0..16; returns logits."""
        logits: torch.Tensor = self.classifier(self.features(x / 16.0))
        return logits
