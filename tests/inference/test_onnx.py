"""Models served by ONNX Runtime (`runtime = "onnx"`): the same API as PyTorch's, with no torch in
the server's process, the same answers as the PyTorch model, and a clear error for a graph that
cannot be served while the other models go on serving."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from inference.app import create_app
from inference.errors import ConfigError
from inference.loader import LoadedModel, load
from inference.manifest import load_manifest
from inference.ort import providers_for
from tests.support.inference import auth, data_url, image_bytes, inference_server, settings_for
from tests.support.models import open_image
from tests.support.paths import DATA, MODELS_DIR, REPO
from tests.support.servers import serve

# ONNX Runtime fp32 against PyTorch fp32, in each probability a visitor sees (rounded to 4
# places): their raw logits differ by less than 1e-5, so at most one step of the rounding.
PROBABILITY_TOLERANCE = 1.5e-4

SERVE_SHIPPED_MODELS = """
import json, sys
import httpx
from inference.manifest import load_manifest
from tests.support.inference import auth, data_url, inference_server
from tests.support.paths import MODELS_DIR

answers = []
with inference_server(MODELS_DIR) as url:
    for name in ("digits", "defects"):
        manifest = load_manifest(MODELS_DIR / name)
        for example in manifest.examples:
            image = data_url((manifest.folder / example.input["image"]).read_bytes(), "image/png")
            got = httpx.post(
                f"{url}/v1/models/modelfolio/{name}/predictions",
                json={"input": {"image": image}},
                headers={**auth(), "Prefer": "wait"},
                timeout=30,
            ).json()
            answers.append([got["status"], got["output"]["label"], example.expected])
print(json.dumps({"answers": answers, "imported": sorted(m for m in ("torch", "torchvision",
      "onnxruntime") if m in sys.modules)}))
"""


def test_the_shipped_models_answer_from_onnx_runtime_and_the_server_never_imports_torch() -> None:
    # Its own process: this one has torch already. The real server, on loopback.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", SERVE_SHIPPED_MODELS], cwd=REPO, env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert len(report["answers"]) == 8
    assert all(status == "succeeded" and got == expected for status, got, expected in report["answers"])
    assert report["imported"] == ["onnxruntime"]  # neither torch nor torchvision


def outputs_of(model: LoadedModel, images: list[dict]) -> list[dict]:
    return [output for output, _ in model.run([model.prepare(one) for one in images])]


def probabilities(output: dict) -> dict[str, float]:
    return {p["label"]: p["probability"] for p in output["probabilities"]}


@pytest.mark.parametrize("name", ["digits", "defects"])
def test_onnx_runtime_answers_as_pytorch_on_the_shipped_models(name: str) -> None:
    manifest = load_manifest(MODELS_DIR / name)
    pictures = [{"image": open_image(path)} for path in sorted((DATA / name).glob("*.png"))]
    pictures += [{"image": open_image(manifest.folder / e.input["image"])} for e in manifest.examples]
    pytorch = outputs_of(load(replace(manifest, runtime="torch", precision="fp32"), "owner"), pictures)
    served = load(manifest, "owner")
    assert (manifest.runtime, served.precision) == ("onnx", "fp32")
    int8 = load(replace(manifest, precision="int8"), "owner")
    assert int8.precision == "int8"  # its gate passed, for this very version
    assert manifest.measured["onnx_int8_agreement"] >= 0.99
    for ours, theirs in zip(outputs_of(served, pictures), pytorch, strict=True):
        assert ours["label"] == theirs["label"]
        assert probabilities(ours) == pytest.approx(probabilities(theirs), abs=PROBABILITY_TOLERANCE)
    assert [o["label"] for o in outputs_of(int8, pictures)] == [o["label"] for o in pytorch]


def test_an_int8_model_runs_its_checked_graph_and_falls_back_to_fp32_saying_why(
    colors: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = replace(load_manifest(colors), precision="int8")
    model = load(manifest, "owner")
    assert model.precision == "int8"
    assert model.predictor.graph.path.name == "model.int8.onnx"  # type: ignore[attr-defined]
    assert outputs_of(model, [{"image": open_image(colors / "examples" / "red.png")}])[0]["label"] == "red"

    (colors / "model.int8.onnx").unlink()
    with caplog.at_level(logging.WARNING, logger="inference"):
        model = load(replace(load_manifest(colors), precision="int8"), "owner")
    assert model.precision == "fp32"
    assert model.predictor.graph.path.name == "model.onnx"  # type: ignore[attr-defined]
    assert (
        "colors runs in fp32: int8 was asked for, but its agreement with fp32 was measured on another version"
        in caplog.text
    )


def settled(url: str) -> dict:
    """/readyz once no model is still loading (some may have failed)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = httpx.get(f"{url}/readyz")
        if answer.status_code == 200 or "loading []" in answer.json()["detail"]:
            return answer.json()
        time.sleep(0.05)
    raise AssertionError("models still loading after 60 s")


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("missing", 'model.onnx does not exist: runtime = "onnx" serves it'),
        ("corrupt", "model.onnx is not a graph ONNX Runtime can load"),
        (
            "wrong-shape",
            "model.onnx: the graph takes inputs of shape (1, 8, 8) float32 per item (after the batch "
            "axis), but preprocess() made (3, 16, 16) float32",
        ),
    ],
)
def test_a_folder_whose_graph_cannot_be_served_is_named_with_its_problem_and_the_others_serve(
    colors: Path, damage: str, problem: str
) -> None:
    broken = colors.parent / "broken"
    shutil.copytree(colors, broken)
    graph = broken / "model.onnx"
    if damage == "missing":
        graph.unlink()
    elif damage == "corrupt":
        graph.write_bytes(b"\x08\x07 not a graph, cut short")
    else:  # the digit recognizer's graph: it takes 8x8 digits
        shutil.copy(MODELS_DIR / "digits" / "model.onnx", graph)
    image = {"input": {"image": data_url(image_bytes((20, 20), "blue"), "image/png")}}
    with serve(create_app(settings_for(colors.parent))) as url:
        ready = settled(url)
        assert ready["detail"].endswith("failed ['broken']")
        with httpx.Client(base_url=url, headers={**auth(), "Prefer": "wait"}, timeout=30) as client:
            good = client.post("/v1/models/modelfolio/colors/predictions", json=image)
            refused = client.post("/v1/models/modelfolio/broken/predictions", json=image)
    assert good.json()["status"] == "succeeded" and good.json()["output"]["label"] == "blue"
    assert refused.status_code == 503
    assert f"{broken}/{problem}" in refused.json()["detail"]


def test_an_onnx_model_keeps_the_api_schema_batching_and_metrics(colors: Path) -> None:
    images = [data_url(image_bytes((30, 20), color), "image/png") for color in ("red", "green", "blue") * 8]
    with (
        inference_server(colors.parent) as url,
        httpx.Client(base_url=url, headers={**auth(), "Prefer": "wait"}, timeout=30) as client,
    ):
        schema = client.get("/v1/models/modelfolio/colors").json()["latest_version"]["openapi_schema"]
        with ThreadPoolExecutor(12) as pool:
            answers = list(
                pool.map(
                    lambda image: client.post(
                        "/v1/models/modelfolio/colors/predictions", json={"input": {"image": image}}
                    ).json(),
                    images,
                )
            )
        refused = client.post("/v1/models/modelfolio/colors/predictions", json={"input": {"picture": "x"}})
        metrics = client.get("/metrics").text
    assert schema["components"]["schemas"]["Input"]["required"] == ["image"]
    assert [a["output"]["label"] for a in answers] == ["red", "green", "blue"] * 8
    assert all(a["metrics"]["predict_time"] > 0 for a in answers)
    assert refused.status_code == 422 and "unknown input 'picture'" in refused.json()["detail"]
    assert 'modelfolio_predictions_total{model="modelfolio/colors",status="succeeded"} 24.0' in metrics
    assert 'modelfolio_batch_size_count{model="modelfolio/colors"}' in metrics


def test_a_new_graph_goes_live_by_reload_first_as_a_canary(colors: Path) -> None:
    image = {"input": {"image": data_url(image_bytes((20, 20), "green"), "image/png")}}
    with (
        inference_server(colors.parent) as url,
        httpx.Client(base_url=url, headers=auth(), timeout=60) as client,
    ):
        first = client.post(
            "/v1/models/modelfolio/colors/predictions", json=image, headers={"Prefer": "wait"}
        )
        shutil.copy(colors / "model.int8.onnx", colors / "model.onnx")  # the owner ships a new graph
        canary = client.post("/v1/admin/models/colors/reload", json={"canary_weight": 0.5}).json()
        split = [
            client.post(
                "/v1/models/modelfolio/colors/predictions", json=image, headers={"Prefer": "wait"}
            ).json()
            for _ in range(40)
        ]
        client.post("/v1/admin/models/colors/promote", json={"version": canary["version"]})
        after = client.post(
            "/v1/models/modelfolio/colors/predictions", json=image, headers={"Prefer": "wait"}
        )
    old = first.json()["version"]
    assert canary["changed"] is True and canary["version"] != old
    assert {p["version"] for p in split} == {old, canary["version"]}  # 40 draws at 0.5: both, all but surely
    assert {p["output"]["label"] for p in split} == {"green"}
    assert after.json()["version"] == canary["version"]


def test_an_onnx_predict_py_that_imports_torch_at_the_top_is_refused_by_name(colors: Path) -> None:
    predict = colors / "predict.py"
    predict.write_text(
        predict.read_text().replace("import numpy as np\n", "import numpy as np\nimport torch\n", 1)
    )
    with pytest.raises(
        ConfigError, match=r"predict.py imports torch at module level; with runtime = \"onnx\""
    ):
        load(load_manifest(colors), "owner")


def test_on_a_gpu_machine_tensorrt_gets_the_int8_graph_with_one_profile_for_every_batch(colors: Path) -> None:
    # What the onnx-gpu extra's provider list would give; no GPU runs here (see ort.py).
    manifest = load_manifest(colors)
    graph = load(manifest, "owner").predictor.graph  # type: ignore[attr-defined]
    chosen = providers_for(
        "int8",
        ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        graph,
        manifest,
    )
    assert [p if isinstance(p, str) else p[0] for p in chosen] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    trt = chosen[0][1]
    assert trt["trt_int8_enable"] is True and trt["trt_fp16_enable"] is False
    assert (trt["trt_profile_min_shapes"], trt["trt_profile_max_shapes"]) == (
        "input:1x3x16x16",
        "input:8x3x16x16",
    )
    assert providers_for("fp32", ["CPUExecutionProvider"], graph, manifest) == ["CPUExecutionProvider"]
