"""What the benchmark's ResNets do around the network, without torch: resize and crop on the way in,
top-5 classes on the way out; and the pictures `python -m inference export` calibrates INT8 on and
measures agreement on. The ONNX rows import only this; the network itself is in resnet.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image

SIDE, CROP = 256, 224


def crop(image: PIL.Image.Image) -> np.ndarray:
    """Resize the short side to 256, centre-crop 224: HWC uint8, what the network takes (it
    normalises a whole batch itself)."""
    image = image.convert("RGB")
    width, height = image.size
    scale = SIDE / min(width, height)
    image = image.resize(
        (max(SIDE, round(width * scale)), max(SIDE, round(height * scale))), PIL.Image.Resampling.BILINEAR
    )
    left, top = (image.width - CROP) // 2, (image.height - CROP) // 2
    return np.asarray(image.crop((left, top, left + CROP, top + CROP)))


def top5(logits: np.ndarray) -> dict[str, Any]:
    """One image's 1000 logits -> its five likeliest classes, with probabilities."""
    exp = np.exp(logits.astype(np.float64) - logits.max())
    probabilities = exp / exp.sum()
    best = np.argsort(-probabilities, kind="stable")[:5]
    ranked = [{"label": f"class {i}", "probability": round(float(probabilities[i]), 4)} for i in best]
    return {"label": ranked[0]["label"], "confidence": ranked[0]["probability"], "probabilities": ranked}


def calibration_images() -> list[PIL.Image.Image]:
    """64 pictures: 32 like the benchmark's request (gradient and noise, other seeds) and 32
    generated surfaces; the random-weight networks have no training set to draw from."""
    from benchmarks.image import jpeg_bytes

    photos = [PIL.Image.open(_io(jpeg_bytes(seed))) for seed in range(1, 33)]
    return photos + _surfaces(32, seed=1)


def heldout_images() -> list[PIL.Image.Image]:
    """300 generated surfaces, as `python -m benchmarks.forward --agreement 300` uses for bf16."""
    return _surfaces(300, seed=0)


def _surfaces(count: int, seed: int) -> list[PIL.Image.Image]:
    from inference.models.defects.surfaces import CLASSES, surface_image

    rng = np.random.default_rng(seed)
    return [surface_image(CLASSES[i % len(CLASSES)], rng).convert("RGB") for i in range(count)]


def _io(data: bytes) -> Any:
    import io

    return io.BytesIO(data)
