"""The benchmark's image classifier, shared by every server under test so they differ only in
how they serve: torchvision ResNets with random, seeded weights (no weights file is ever
downloaded), ImageNet preprocessing, top-5 out. Resizing, cropping and the top-5 are numpy and
Pillow (imagenet.py); this module is the torch part."""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch
import torchvision

from benchmarks.imagenet import crop, top5

MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


class ImageNetInput(torch.nn.Module):
    """uint8 NHWC pixels -> normalised float NCHW, inside the network: one conversion per batch,
    and the exported ONNX graph takes the same uint8 crops as PyTorch."""

    def __init__(self) -> None:
        super().__init__()
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        # channels_last measured 1.1-1.3x faster here (benchmarks/forward.py); NHWC viewed as NCHW
        # already is. forward.py sets contiguous_format to compare.
        self.layout: torch.memory_format = torch.channels_last

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float().contiguous(memory_format=self.layout)
        return (x - self.mean) / self.std


def build(arch: str) -> torch.nn.Sequential:
    """The network, taking a batch of `crop()`s (uint8 NHWC), giving logits."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    return torch.nn.Sequential(ImageNetInput(), model.to(memory_format=torch.channels_last)).eval()


def to_batch(images: list[PIL.Image.Image]) -> torch.Tensor:
    return torch.from_numpy(np.stack([crop(image) for image in images]))


def classify(model: torch.nn.Module, images: list[PIL.Image.Image]) -> list[dict]:
    """One forward pass for the whole batch."""
    return classify_crops(model, [crop(image) for image in images])


def classify_crops(model: torch.nn.Module, crops: list[np.ndarray]) -> list[dict]:
    """The same, from crops already made (by a server that crops while the model runs)."""
    with torch.inference_mode():
        logits = model(torch.from_numpy(np.stack(crops))).float().numpy()
    return [top5(row) for row in logits]
