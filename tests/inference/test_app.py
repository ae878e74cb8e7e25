"""The inference server, over real HTTP on loopback, with tiny fixture models (no torch)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from inference.app import create_app
from tests.support import gates as fixture_gates
from tests.support.inference import (
    TOKEN,
    auth,
    data_url,
    image_bytes,
    inference_server,
    png_data_url,
    settings_for,
)
from tests.support.paths import FIXTURES
from tests.support.servers import serve

CREATE = "/v1/models/modelfolio/shapes/predictions"


@pytest.fixture(scope="module")
def server() -> str:
    with inference_server(FIXTURES / "models") as url:
        yield url


@pytest.fixture
def client(server: str) -> httpx.Client:
    with httpx.Client(base_url=server, headers=auth(), timeout=30) as c:
        yield c


def gate() -> threading.Event:
    return fixture_gates.GATE


def test_a_prediction_with_prefer_wait_returns_the_result_and_its_time(client: httpx.Client) -> None:
    r = client.post(CREATE, json={"input": {"image": png_data_url((40, 30))}}, headers={"Prefer": "wait"})
    assert r.status_code == 201
    p = r.json()
    assert p["status"] == "succeeded"
    assert p["output"] == {"width": 40.0, "height": 30.0, "mode": "RGB"}
    assert p["metrics"]["predict_time"] > 0
    assert p["model"] == "modelfolio/shapes"
    assert p["urls"]["get"].endswith(f"/v1/predictions/{p['id']}")
    assert p["input"]["image"].startswith("data:image/png;base64,")


def test_without_prefer_wait_the_create_answers_at_once_and_polling_finds_the_result(
    client: httpx.Client,
) -> None:
    gate().clear()
    try:
        r = client.post(CREATE, json={"input": {"image": png_data_url(), "scale": 2}})
        assert r.status_code == 201
        assert r.json()["status"] in ("starting", "processing")
        assert client.get(r.json()["urls"]["get"]).json()["status"] in ("starting", "processing")
    finally:
        gate().set()
    done = client.post(CREATE, json={"input": {"image": png_data_url()}}, headers={"Prefer": "wait"})
    assert done.json()["status"] == "succeeded"
    polled = client.get(f"/v1/predictions/{r.json()['id']}").json()
    assert polled["status"] == "succeeded"
    assert polled["output"]["width"] == 64.0


def test_canceling_a_queued_prediction_ends_it_as_canceled(client: httpx.Client) -> None:
    gate().clear()
    try:
        first = client.post(CREATE, json={"input": {"image": png_data_url()}}).json()
        queued = client.post(CREATE, json={"input": {"image": png_data_url()}}).json()
        canceled = client.post(f"/v1/predictions/{queued['id']}/cancel").json()
        assert canceled["status"] == "canceled"
    finally:
        gate().set()
    client.post(CREATE, json={"input": {"image": png_data_url()}}, headers={"Prefer": "wait"})
    assert client.get(f"/v1/predictions/{first['id']}").json()["status"] == "succeeded"
    again = client.get(f"/v1/predictions/{queued['id']}").json()
    assert again["status"] == "canceled" and again["output"] is None


def test_a_predictor_error_fails_only_that_prediction(client: httpx.Client) -> None:
    r = client.post(
        CREATE, json={"input": {"image": png_data_url(), "mode": "fail"}}, headers={"Prefer": "wait"}
    )
    assert r.json()["status"] == "failed"
    assert "asked to fail" in r.json()["error"]
    ok = client.post(CREATE, json={"input": {"image": png_data_url()}}, headers={"Prefer": "wait"})
    assert ok.json()["status"] == "succeeded"


def test_queued_requests_run_together_as_one_batch(client: httpx.Client) -> None:
    batches = fixture_gates.BATCHES
    gate().clear()
    try:
        held = client.post(CREATE, json={"input": {"image": png_data_url()}}).json()
        queued = [client.post(CREATE, json={"input": {"image": png_data_url()}}).json() for _ in range(3)]
        batches.clear()
    finally:
        gate().set()
    last = client.post(f"/v1/predictions/{queued[-1]['id']}/cancel")  # does not matter if it ran
    assert last.status_code == 200
    client.post(CREATE, json={"input": {"image": png_data_url()}}, headers={"Prefer": "wait"})
    assert client.get(f"/v1/predictions/{held['id']}").json()["status"] == "succeeded"
    assert max(batches) >= 2  # the queued ones ran in one forward call, not one by one


def test_a_full_queue_answers_429_with_retry_after(client: httpx.Client) -> None:
    gate().clear()
    try:
        answers = [client.post(CREATE, json={"input": {"image": png_data_url()}}) for _ in range(12)]
    finally:
        gate().set()
    codes = [a.status_code for a in answers]
    assert codes.count(429) >= 1 and codes[0] == 201
    rejected = answers[codes.index(429)]
    assert rejected.headers["Retry-After"] == "1"
    assert "queued" in rejected.json()["detail"]


def test_the_model_object_carries_the_input_schema_version_and_price(client: httpx.Client) -> None:
    model = client.get("/v1/models/modelfolio/shapes").json()
    schema = model["latest_version"]["openapi_schema"]["components"]["schemas"]["Input"]
    assert schema["required"] == ["image"]
    assert schema["properties"]["scale"] == {
        "title": "Scale",
        "x-order": 1,
        "type": "number",
        "minimum": 0.5,
        "maximum": 4.0,
        "default": 1.0,
    }
    assert schema["properties"]["mode"]["enum"] == ["size", "fail"]
    assert model["price_per_second"] == "0.002"
    version = model["latest_version"]["id"]
    assert client.get(f"/v1/models/modelfolio/shapes/versions/{version}").json()["cog_version"]


def test_create_by_version_id(client: httpx.Client) -> None:
    version = client.get("/v1/models/modelfolio/shapes").json()["latest_version"]["id"]
    r = client.post(
        "/v1/predictions",
        json={"version": version, "input": {"image": png_data_url()}},
        headers={"Prefer": "wait=10"},
    )
    assert r.status_code == 201 and r.json()["status"] == "succeeded"


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing Authorization header"),
        ({"Authorization": "Bearer wrong"}, "invalid inference token"),
        ({"Authorization": TOKEN}, "invalid inference token"),
    ],
)
def test_every_api_route_needs_the_token(server: str, headers: dict[str, str], detail: str) -> None:
    for method, path in [
        ("POST", CREATE),
        ("GET", "/v1/predictions/x"),
        ("GET", "/v1/models/modelfolio/shapes"),
    ]:
        r = httpx.request(method, server + path, headers=headers, json={"input": {}})
        assert r.status_code == 401, path
        assert r.json() == {"detail": detail}
        assert TOKEN not in r.text


def test_health_needs_no_token(server: str) -> None:
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server}/readyz").status_code == 200


def _bad_inputs() -> list[tuple[str, dict, int, str]]:
    png = image_bytes((64, 64))
    return [
        (
            "bytes that are not an image",
            {"image": data_url(b"hello, not an image" * 10, "image/png")},
            422,
            "not an image that can be decoded",
        ),
        (
            "a truncated JPEG",
            {"image": data_url(image_bytes((300, 300), "red", fmt="JPEG")[:600], "image/jpeg")},
            422,
            "damaged or truncated",
        ),
        ("a PDF", {"image": data_url(b"%PDF-1.4", "application/pdf")}, 415, "must be an image"),
        ("an http URL", {"image": "http://169.254.169.254/latest"}, 422, "URLs are not fetched"),
        ("not a data URL", {"image": "hello"}, 422, "must be a data URL"),
        ("broken base64", {"image": "data:image/png;base64,@@@@"}, 422, "malformed"),
        ("a missing image", {}, 422, "input 'image' is required"),
        (
            "an unknown input",
            {"image": data_url(png, "image/png"), "colour": 1},
            422,
            "unknown input 'colour'",
        ),
        (
            "a number out of range",
            {"image": data_url(png, "image/png"), "scale": 9},
            422,
            "input 'scale' must be at most 4.0",
        ),
        (
            "a wrong type",
            {"image": data_url(png, "image/png"), "scale": "big"},
            422,
            "input 'scale' must be a number",
        ),
        (
            "a choice not offered",
            {"image": data_url(png, "image/png"), "mode": "x"},
            422,
            "input 'mode' must be one of",
        ),
    ]


@pytest.mark.parametrize(
    ("case", "inputs", "status", "detail"), _bad_inputs(), ids=[c[0] for c in _bad_inputs()]
)
def test_bad_inputs_get_a_clear_4xx_and_the_server_keeps_serving(
    client: httpx.Client, case: str, inputs: dict, status: int, detail: str
) -> None:
    r = client.post(CREATE, json={"input": inputs}, headers={"Prefer": "wait"})
    assert r.status_code == status, r.text
    assert detail in r.json()["detail"]
    ok = client.post(CREATE, json={"input": {"image": png_data_url()}}, headers={"Prefer": "wait"})
    assert ok.json()["status"] == "succeeded"


def test_a_decompression_bomb_is_refused_before_decoding(client: httpx.Client) -> None:
    # 20000x20000 pixels of one colour compress to a small PNG but would take 1.2 GB decoded.
    bomb = image_bytes((20000, 20000), "black", mode="L")
    r = client.post(CREATE, json={"input": {"image": data_url(bomb, "image/png")}})
    assert r.status_code == 413
    assert "megapixels" in r.json()["detail"]
    medium = image_bytes((8000, 6000), "black", mode="L")  # 48 MP: over our 40 MP limit
    r = client.post(CREATE, json={"input": {"image": data_url(medium, "image/png")}})
    assert r.status_code == 413 and "8000x6000" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "detail"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "not valid JSON"),
        (b'["input"]', {"Content-Type": "application/json"}, 400, '"input" object'),
        (b'{"input": {}}', {"Content-Type": "text/plain"}, 415, "application/json"),
        (b"\xff\xfe", {"Content-Type": "application/json"}, 400, "UTF-8"),
    ],
)
def test_malformed_bodies_get_a_clear_4xx(
    client: httpx.Client, body: bytes, headers: dict, status: int, detail: str
) -> None:
    r = client.post(CREATE, content=body, headers=headers)
    assert r.status_code == status
    assert detail in r.json()["detail"]


def test_a_50_mb_body_gets_413_and_the_server_keeps_serving(client: httpx.Client) -> None:
    r = client.post(CREATE, content=b"x" * (50 * 1024 * 1024), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "limit is 17 MB" in r.json()["detail"]
    ok = client.post(CREATE, json={"input": {"image": png_data_url()}}, headers={"Prefer": "wait"})
    assert ok.json()["status"] == "succeeded"


def test_unknown_models_predictions_and_routes_get_404(client: httpx.Client) -> None:
    assert (
        "no model named modelfolio/nope"
        in client.post("/v1/models/modelfolio/nope/predictions", json={"input": {}}).json()["detail"]
    )
    assert client.post("/v1/models/someone/shapes/predictions", json={"input": {}}).status_code == 404
    assert client.get("/v1/predictions/doesnotexist").status_code == 404
    assert client.get("/v1/nothing").status_code == 404
    assert client.post("/v1/predictions", json={"version": "abc", "input": {}}).status_code == 404


def test_a_model_that_fails_setup_is_503_while_the_others_serve(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "models" / "shapes", tmp_path / "shapes")
    shutil.copytree(FIXTURES / "broken_models" / "broken", tmp_path / "broken")
    with (
        serve(create_app(settings_for(tmp_path))) as url,
        httpx.Client(base_url=url, headers=auth(), timeout=30) as c,
    ):
        ok = c.post(CREATE, json={"input": {"image": png_data_url()}}, headers={"Prefer": "wait"})
        assert ok.json()["status"] == "succeeded"
        broken = c.post("/v1/models/modelfolio/broken/predictions", json={"input": {"text": "x"}})
        assert broken.status_code == 503
        assert "weights missing" in broken.json()["detail"]
        assert c.get("/readyz").status_code == 503


def test_a_prediction_whose_deadline_passed_in_the_queue_fails_without_running(client: httpx.Client) -> None:
    gate().clear()
    try:
        client.post(CREATE, json={"input": {"image": png_data_url()}})  # holds the model
        late = client.post(
            CREATE, json={"input": {"image": png_data_url()}}, headers={"Cancel-After": "1ms"}
        ).json()
        deadline_passed_at = time.monotonic() + 0.002
        while time.monotonic() < deadline_passed_at:  # the behaviour under test is time passing
            pass
    finally:
        gate().set()
    client.post(CREATE, json={"input": {"image": png_data_url()}}, headers={"Prefer": "wait"})
    ended = client.get(f"/v1/predictions/{late['id']}").json()
    assert ended["status"] == "failed"
    assert "deadline passed" in ended["error"] and ended["output"] is None


def test_a_malformed_cancel_after_is_a_400(client: httpx.Client) -> None:
    r = client.post(CREATE, json={"input": {"image": png_data_url()}}, headers={"Cancel-After": "soon"})
    assert r.status_code == 400 and "Cancel-After" in r.json()["detail"]


def test_put_with_a_client_id_creates_once_however_often_it_is_retried(client: httpx.Client) -> None:
    version = client.get("/v1/models/modelfolio/shapes").json()["latest_version"]["id"]
    body = {"version": version, "input": {"image": png_data_url()}}
    first = client.put("/v1/predictions/order-42", json=body, headers={"Prefer": "wait"})
    again = client.put("/v1/predictions/order-42", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] == "order-42"
    assert again.json()["status"] == "succeeded"
    assert client.put("/v1/predictions/bad id!", json=body).status_code == 422


def test_metrics_count_predictions_batches_and_errors(client: httpx.Client) -> None:
    client.post(CREATE, json={"input": {"image": png_data_url()}}, headers={"Prefer": "wait"})
    client.post(CREATE, json={"input": {}})
    text = client.get("/metrics").text
    assert 'modelfolio_predictions_total{model="modelfolio/shapes",status="succeeded"}' in text
    assert 'modelfolio_batch_size_count{model="modelfolio/shapes"}' in text
    assert 'modelfolio_queue_depth{model="modelfolio/shapes",version="' in text
    assert 'modelfolio_http_errors_total{kind="InvalidInput",status="422"}' in text


def test_openapi_describes_each_models_input(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    create = spec["paths"]["/v1/models/modelfolio/shapes/predictions"]["post"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["properties"]["input"]["$ref"]
    assert spec["components"]["schemas"][ref.rsplit("/", 1)[1]]["required"] == ["image"]
    page = client.get("/docs").text
    assert "POST /v1/models/modelfolio/shapes/predictions" in page and "<code>scale</code>" in page


def test_an_uploaded_file_can_be_used_as_an_input_by_its_url(client: httpx.Client) -> None:
    png = image_bytes((21, 13))
    uploaded = client.post(
        "/v1/files",
        files={"content": ("photo.png", png, "image/png")},
        data={"metadata": '{"source": "test"}'},
    )
    assert uploaded.status_code == 201
    file = uploaded.json()
    assert (file["size"], file["content_type"], file["metadata"]) == (
        len(png),
        "image/png",
        {"source": "test"},
    )
    r = client.post(CREATE, json={"input": {"image": file["urls"]["get"]}}, headers={"Prefer": "wait"})
    assert r.json()["output"]["width"] == 21.0
    # The proxy rewrites URLs to its own host; the file id is what counts, never a fetch.
    elsewhere = file["urls"]["get"].replace("127.0.0.1", "models.example.com")
    assert (
        client.post(CREATE, json={"input": {"image": elsewhere}}, headers={"Prefer": "wait"}).json()["status"]
        == "succeeded"
    )
    assert client.delete(f"/v1/files/{file['id']}").status_code == 204
    gone = client.post(CREATE, json={"input": {"image": file["urls"]["get"]}})
    assert gone.status_code == 404 and "no file" in gone.json()["detail"]


def test_an_upload_without_a_file_or_in_the_wrong_form_is_refused(client: httpx.Client) -> None:
    assert client.post("/v1/files", json={"content": "x"}).status_code == 415
    r = client.post("/v1/files", files={"other": ("a.png", b"x", "image/png")})
    assert r.status_code == 422 and "'content'" in r.json()["detail"]


def test_an_image_url_is_fetched_only_from_an_allow_listed_host(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.support.servers import serve

    png = image_bytes((9, 4))
    files = Starlette(routes=[Route("/digit.png", lambda r: Response(png, media_type="image/png"))])
    with (
        serve(files) as host,
        inference_server(FIXTURES / "models", fetch_hosts=("127.0.0.1",)) as url,
        httpx.Client(base_url=url, headers=auth(), timeout=30) as c,
    ):
        fetched = c.post(CREATE, json={"input": {"image": f"{host}/digit.png"}}, headers={"Prefer": "wait"})
        missing = c.post(CREATE, json={"input": {"image": f"{host}/nothing.png"}})
        elsewhere = c.post(CREATE, json={"input": {"image": "http://localhost:9/digit.png"}})
    assert fetched.json()["output"]["width"] == 9.0
    assert missing.status_code == 422 and "answered 404" in missing.json()["detail"]
    assert elsewhere.status_code == 422 and "'localhost' are not fetched" in elsewhere.json()["detail"]
