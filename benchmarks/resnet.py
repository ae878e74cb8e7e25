"""The benchmark's image classifier, shared by every server under test so they differ only in
how they serve: torchvision ResNets with random, seeded weights (no weights file is ever
downloaded), ImageNet preprocessing, top-5 out."""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch
import torchvision

SIDE, CROP = 256, 224
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def build(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    # channels_last measured 1.1-1.3x faster here (benchmarks/forward.py); the input already is.
    return model.to(memory_format=torch.channels_last)


def crop(image: PIL.Image.Image) -> np.ndarray:
    """Resize the short side to 256, centre-crop 224: HWC uint8."""
    image = image.convert("RGB")
    width, height = image.size
    scale = SIDE / min(width, height)
    image = image.resize((max(SIDE, round(width * scale)), max(SIDE, round(height * scale))),
                         PIL.Image.Resampling.BILINEAR)
    left, top = (image.width - CROP) // 2, (image.height - CROP) // 2
    return np.asarray(image.crop((left, top, left + CROP, top + CROP)))


def to_batch(images: list[PIL.Image.Image]) -> torch.Tensor:
    return normalised([crop(image) for image in images])


def normalised(crops: list[np.ndarray]) -> torch.Tensor:
    # NHWC uint8 viewed as NCHW is channels_last already: one conversion and normalisation per batch.
    pixels = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
    return pixels.float().sub_(MEAN).div_(STD)


def top5(probabilities: torch.Tensor) -> dict:
    values, indices = probabilities.topk(5)
    ranked = [{"label": f"class {i}", "probability": round(p, 4)}
              for p, i in zip(values.tolist(), indices.tolist(), strict=True)]
    return {"label": ranked[0]["label"], "confidence": ranked[0]["probability"], "probabilities": ranked}


def classify(model: torch.nn.Module, images: list[PIL.Image.Image]) -> list[dict]:
    """One forward pass for the whole batch."""
    return classify_crops(model, [crop(image) for image in images])


def classify_crops(model: torch.nn.Module, crops: list[np.ndarray]) -> list[dict]:
    """The same, from crops already made (by a server that crops while the model runs)."""
    with torch.inference_mode():
        probabilities = torch.softmax(model(normalised(crops)), dim=1)
    return [top5(row) for row in probabilities]
