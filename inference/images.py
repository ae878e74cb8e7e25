"""A batch of `ImageBytes` inputs decoded into tensors, for a predictor's `predict_batch`:

    from inference.images import decode
    pixels = decode([item["image"] for item in inputs])  # uint8 (3, H, W) tensors, RGB

Where there is a GPU, the batch's JPEGs are decoded together on it by torchvision's nvJPEG decoder,
so the CPU cores stay free for HTTP and the rest; other formats, JPEGs with an EXIF rotation (the
GPU decoder ignores it), a failed GPU decode and machines without a GPU use the CPU, with the same
result. torchvision 0.29 marks its decoders deprecated in favour of TorchCodec; they still work,
and the warning is silenced here.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import PIL.Image
import PIL.ImageOps

from inference.predictor import ImageBytes

if TYPE_CHECKING:
    import torch

log = logging.getLogger("inference")


def decode(images: Sequence[ImageBytes], device: str | None = None) -> list[torch.Tensor]:
    """uint8 RGB tensors of shape (3, H, W) on `device` (default: the GPU if there is one), in order."""
    import torch

    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    decoded: list[torch.Tensor | None] = [None] * len(images)
    on_gpu = [i for i, image in enumerate(images) if image.format == "JPEG" and image.orientation == 1]
    if target.type == "cuda" and on_gpu:
        try:
            for i, pixels in zip(on_gpu, _gpu_jpegs([images[i] for i in on_gpu], target), strict=True):
                decoded[i] = pixels
        except RuntimeError as exc:  # e.g. a JPEG nvJPEG cannot read: the CPU can
            log.warning("GPU JPEG decode failed, decoding on the CPU: %s", exc)
    return [
        pixels if pixels is not None else _on_cpu(image).to(target)
        for pixels, image in zip(decoded, images, strict=True)
    ]


def _gpu_jpegs(images: list[ImageBytes], device: torch.device) -> list[torch.Tensor]:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(image), dtype=torch.uint8) for image in images]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchCodec deprecation notice, on every call
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))


def _on_cpu(image: ImageBytes) -> torch.Tensor:
    """As the server decodes an `Image` input: EXIF rotation applied, transparency on white."""
    import numpy as np
    import torch

    from inference.files import flatten

    with PIL.Image.open(io.BytesIO(image)) as opened:
        opened.load()
        PIL.ImageOps.exif_transpose(opened, in_place=True)
        rgb = flatten(opened).convert("RGB")
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)
