"""The request image: a deterministic 224x224 JPEG of about 20 KB (a gradient with seeded noise),
as the anchors in ../shared/notes/serving-anchors.md used."""

from __future__ import annotations

import base64
import io

import numpy as np
import PIL.Image


def jpeg_bytes(seed: int = 0, side: int = 224) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    rgb = np.stack([x, y, 1 - (x + y) / 2], axis=-1) * 255
    rgb += rng.normal(0, 14, rgb.shape)
    image = PIL.Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def data_url(seed: int = 0) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes(seed)).decode()
