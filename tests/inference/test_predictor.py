"""A Cog predict.py runs here with only its import line changed."""

from __future__ import annotations

import base64
import io

import httpx
import PIL.Image

from tests.support.inference import auth, data_url, image_bytes, inference_server
from tests.support.paths import FIXTURES


def test_a_cog_predictor_with_a_path_input_and_a_path_output_runs_unchanged() -> None:
    with inference_server(FIXTURES / "cog_models") as url, httpx.Client(base_url=url, headers=auth()) as c:
        schema = c.get("/v1/models/modelfolio/upscale").json()["latest_version"]["openapi_schema"]
        props = schema["components"]["schemas"]["Input"]["properties"]
        assert props["image"]["format"] == "uri" and props["image"]["description"] == "Grayscale input image"
        assert props["scale"]["minimum"] == 1 and props["scale"]["default"] == 1.5
        r = c.post(
            "/v1/models/modelfolio/upscale/predictions",
            headers={"Prefer": "wait"},
            json={"input": {"image": data_url(image_bytes((10, 6)), "image/png"), "scale": 3}},
        )
    prediction = r.json()
    assert prediction["status"] == "succeeded", prediction["error"]
    header, _, payload = prediction["output"].partition(",")
    assert header == "data:image/png;base64"
    assert PIL.Image.open(io.BytesIO(base64.b64decode(payload))).size == (30, 18)
