"""Images handed to a predictor undecoded (`ImageBytes`), for decoding a whole batch on the GPU:
checked at the door like any image, decoded by `inference.images.decode` (here, without a GPU,
on the CPU) into the very pixels the server's own decoding gives."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import PIL.Image
import pytest

from inference.files import decode_image
from tests.support.inference import auth, data_url, image_bytes, model_server

PREDICT = """
from inference.images import decode
from inference.predictor import BasePredictor, ImageBytes, Input


class Predictor(BasePredictor):
    def predict(self, image: ImageBytes = Input(description="A photo")) -> dict:
        return self.predict_batch([{"image": image}])[0]

    def predict_batch(self, inputs: list[dict]) -> list[dict]:
        pixels = decode([item["image"] for item in inputs], device="cpu")
        return [{"format": item["image"].format, "shape": list(p.shape), "sum": int(p.sum())}
                for item, p in zip(inputs, pixels)]
"""
CREATE = "/v1/models/modelfolio/raw/predictions"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with model_server(
        tmp_path_factory.mktemp("models"), "raw", PREDICT, "[batching]\nmax_batch_size = 4\n"
    ) as url:
        yield url


def photo(fmt: str = "JPEG", *, exif_rotation: int | None = None) -> bytes:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    image = PIL.Image.fromarray(pixels)
    buffer = io.BytesIO()
    if exif_rotation is None:
        image.save(buffer, fmt)
    else:
        exif = PIL.Image.Exif()
        exif[0x0112] = exif_rotation
        image.save(buffer, fmt, exif=exif)
    return buffer.getvalue()


def predict(url: str, data: bytes, mime: str) -> httpx.Response:
    return httpx.post(
        url + CREATE,
        json={"input": {"image": data_url(data, mime)}},
        headers=auth() | {"Prefer": "wait"},
        timeout=30,
    )


@pytest.mark.parametrize(
    ("fmt", "mime", "rotation"),
    [
        ("JPEG", "image/jpeg", None),
        ("PNG", "image/png", None),
        ("JPEG", "image/jpeg", 6),
    ],
    ids=["jpeg", "png", "jpeg-rotated-by-exif"],
)
def test_the_predictor_gets_the_same_pixels_the_server_decodes(
    server: str, fmt: str, mime: str, rotation: int | None
) -> None:
    data = photo(fmt, exif_rotation=rotation)
    answer = predict(server, data, mime)
    assert answer.status_code == 201, answer.text
    reference = np.asarray(decode_image("image", mime, data, max_pixels=10**6).convert("RGB"))
    height, width = reference.shape[:2]
    assert answer.json()["output"] == {
        "format": fmt,
        "shape": [3, height, width],
        "sum": int(reference.sum()),
    }
    assert (height, width) == ((64, 48) if rotation == 6 else (48, 64))


def test_a_truncated_jpeg_is_refused_before_it_is_queued(server: str) -> None:
    answer = predict(server, photo()[:-200], "image/jpeg")
    assert answer.status_code == 422
    assert "damaged or truncated" in answer.json()["detail"]


def test_a_decompression_bomb_is_refused_by_its_header(server: str) -> None:
    answer = predict(server, image_bytes((20000, 20000), fmt="PNG"), "image/png")
    assert answer.status_code == 413
    assert "the limit is 40 megapixels" in answer.json()["detail"]


def test_text_is_not_taken_for_an_image(server: str) -> None:
    answer = predict(server, b"hello, not an image", "text/plain")
    assert answer.status_code == 415


def test_the_schema_shows_an_image_input(server: str) -> None:
    schema = httpx.get(server + "/openapi.json", headers=auth()).json()
    image = schema["components"]["schemas"]["raw_input"]["properties"]["image"]
    assert image["format"] == "uri" and image["contentMediaType"] == "image/*"
