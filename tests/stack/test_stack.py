"""The whole product over real HTTP: the proxy in front of the inference server with the shipped
models. What a customer, a visitor and the owner see; bad inputs at the front door."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from inference.unoffered import NOT_OFFERED as INFERENCE_TABLE
from proxy.app import create_app as create_proxy
from proxy.cli import main as proxy_cli
from proxy.unoffered import NOT_OFFERED as PROXY_TABLE
from tests.support.inference import TOKEN, data_url, image_bytes
from tests.support.paths import DIGITS
from tests.support.servers import serve
from tests.support.stack import Stack

CREATE = "/v1/models/modelfolio/digits/predictions"


def digit(index: int = 0) -> tuple[str, str]:
    path = sorted(DIGITS.glob("*.png"))[index]
    return data_url(path.read_bytes(), "image/png"), path.stem.rsplit("-", 1)[1]


def billed(ledger: Path, prediction_id: str) -> list[tuple]:
    with sqlite3.connect(ledger) as db:
        return db.execute(
            "SELECT stripe_customer, predict_time_ms, amount FROM billed_usage WHERE prediction_id = ?",
            (prediction_id,),
        ).fetchall()


@pytest.fixture(scope="module")
def customer_key(stack: Stack, monkeypatch_module: pytest.MonkeyPatch) -> str:
    return _new_key(stack, monkeypatch_module, "cus_stacktest")


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _new_key(stack: Stack, mp: pytest.MonkeyPatch, customer: str) -> str:
    """Through the owner's CLI, as the README says: `python -m proxy keys create`."""
    mp.setenv("MODELFOLIO_LEDGER_PATH", str(stack.ledger))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert proxy_cli(["keys", "create", "--customer", customer]) == 0
    return next(line for line in out.getvalue().splitlines() if line.startswith("mf_"))


def test_polling_a_prediction_ten_times_bills_it_once_at_its_price(stack: Stack) -> None:
    image, label = digit(1)
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        created = c.post(CREATE, json={"input": {"image": image}}, headers={"Prefer": "wait"})
        assert created.status_code == 201
        prediction = created.json()
        assert prediction["status"] == "succeeded" and prediction["output"]["label"] == label
        assert prediction["urls"]["get"].startswith(stack.url)  # rewritten: the upstream stays hidden
        polls = [c.get(f"/v1/predictions/{prediction['id']}").json() for _ in range(10)]
    assert {p["status"] for p in polls} == {"succeeded"}
    rows = billed(stack.ledger, prediction["id"])
    assert len(rows) == 1
    customer, ms, amount = rows[0]
    assert customer is None  # a visitor's demo: the owner's cost, never sent to Stripe
    assert ms == prediction["metrics"]["predict_time_ms"]
    assert Decimal(amount) == Decimal("0.0005") * ms / 1000
    assert prediction["billing"]["amount"] == amount


def test_a_customer_key_bills_that_customer_and_usage_shows_the_total(
    stack: Stack, customer_key: str
) -> None:
    image, _ = digit(2)
    auth = {"Authorization": f"Bearer {customer_key}"}
    with httpx.Client(base_url=stack.url, timeout=30, headers=auth) as c:
        p = c.post(CREATE, json={"input": {"image": image}}, headers={"Prefer": "wait"}).json()
        usage = c.get("/v1/usage").json()
    assert billed(stack.ledger, p["id"])[0][0] == "cus_stacktest"
    assert usage["predictions"] >= 1
    assert Decimal(usage["amount_exact"]) >= Decimal(p["billing"]["amount"])


def test_the_official_replicate_client_runs_a_model_through_the_proxy(
    stack: Stack, customer_key: str, tmp_path: Path
) -> None:
    replicate = pytest.importorskip("replicate")
    path = sorted(DIGITS.glob("*.png"))[3]
    client = replicate.Client(api_token=customer_key, base_url=stack.url)
    try:
        with path.open("rb") as f:  # the client's default: upload through POST /v1/files
            output = client.run("modelfolio/digits", input={"image": f})
        prediction = client.models.predictions.create(model="modelfolio/digits", input={"image": digit(4)[0]})
        prediction.wait()
    finally:
        client._client.close()  # the client offers no close() of its own
    assert output["label"] == path.stem.rsplit("-", 1)[1]
    assert prediction.status == "succeeded"
    assert billed(stack.ledger, prediction.id)[0][0] == "cus_stacktest"


def test_a_customer_cannot_read_another_callers_prediction(stack: Stack, customer_key: str) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        mine = c.post(CREATE, json={"input": {"image": digit(5)[0]}}).json()
        theirs = c.get(f"/v1/predictions/{mine['id']}", headers={"Authorization": f"Bearer {customer_key}"})
    assert theirs.status_code == 404


def _bad_requests() -> list[tuple[str, dict, bytes, int, str]]:
    json_type = {"Content-Type": "application/json"}
    jpeg = image_bytes((400, 400), "red", fmt="JPEG")

    def body(image: str) -> bytes:
        return b'{"input": {"image": "' + image.encode() + b'"}}'

    return [
        (
            "bytes that are not an image",
            json_type,
            body(data_url(b"GIF89a" + b"\0" * 64, "image/png")),
            422,
            "not an image",
        ),
        (
            "a truncated JPEG",
            json_type,
            body(data_url(jpeg[: len(jpeg) // 3], "image/jpeg")),
            422,
            "truncated",
        ),
        (
            "a 20000x20000 PNG",
            json_type,
            body(data_url(image_bytes((20000, 20000), "white", mode="L"), "image/png")),
            413,
            "megapixels",
        ),
        ("a 50 MB body", json_type, b"x" * (50 * 1024 * 1024), 413, "limit"),
        ("a wrong content type", {"Content-Type": "text/plain"}, b"hello", 415, "application/json"),
        ("malformed JSON", json_type, b'{"input": {', 400, "JSON"),
        ("an input the model does not take", json_type, b'{"input": {"img": 1}}', 422, "unknown input 'img'"),
    ]


@pytest.mark.parametrize(
    ("case", "headers", "body", "status", "detail"), _bad_requests(), ids=[c[0] for c in _bad_requests()]
)
def test_bad_requests_get_a_clear_4xx_through_the_proxy_and_nothing_is_billed(
    stack: Stack, case: str, headers: dict, body: bytes, status: int, detail: str
) -> None:
    with httpx.Client(base_url=stack.url, timeout=60) as c:
        r = c.post(CREATE, content=body, headers=headers)
        assert r.status_code == status, r.text
        assert detail in r.json()["detail"]
        assert TOKEN not in r.text
        ok = c.post(CREATE, json={"input": {"image": digit()[0]}}, headers={"Prefer": "wait"})
        assert ok.json()["status"] == "succeeded"


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/v1/models/modelfolio/nope/predictions", {}, 404),
        ("/v1/models/someone-else/digits/predictions", {}, 404),
        (CREATE, {"Authorization": "Bearer mf_not_a_real_key"}, 401),
        (CREATE, {"Authorization": f"Bearer {TOKEN}"}, 401),  # the inference token is no customer key
    ],
)
def test_unknown_models_and_wrong_keys_are_refused(
    stack: Stack, path: str, headers: dict, status: int
) -> None:
    r = httpx.post(stack.url + path, json={"input": {"image": digit()[0]}}, headers=headers, timeout=30)
    assert r.status_code == status
    assert r.json()["detail"]


def test_past_the_demo_quota_a_visitor_reads_why_and_when_to_come_back(stack: Stack, tmp_path: Path) -> None:
    config = dataclasses.replace(stack.config, demo_daily_quota=2, ledger_path=tmp_path / "ledger.sqlite3")
    with serve(create_proxy(config)) as url, httpx.Client(base_url=url, timeout=30) as c:
        codes = [c.post(CREATE, json={"input": {"image": digit()[0]}}).status_code for _ in range(3)]
        refused = c.post(CREATE, json={"input": {"image": digit()[0]}})
    assert codes == [201, 201, 429]
    assert int(refused.headers["Retry-After"]) > 0
    assert "2 predictions a day" in refused.json()["detail"]


def test_when_the_inference_server_is_down_the_proxy_says_so_with_retry_after(
    stack: Stack, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    config = dataclasses.replace(stack.config, upstream_url=dead, ledger_path=tmp_path / "ledger.sqlite3")
    with serve(create_proxy(config)) as url:
        r = httpx.post(url + CREATE, json={"input": {"image": digit()[0]}}, timeout=30)
    assert r.status_code == 503
    assert int(r.headers["Retry-After"]) > 0
    assert "127.0.0.1" not in r.json()["detail"]


def test_uploads_need_a_key_and_stay_private_to_their_uploader(
    stack: Stack, customer_key: str, monkeypatch_module: pytest.MonkeyPatch
) -> None:
    png = (DIGITS / min(p.name for p in DIGITS.glob("*.png"))).read_bytes()
    form = {"content": ("digit.png", png, "image/png")}
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        assert c.post("/v1/files", files=form).status_code == 401  # the demo sends data URLs
        mine = c.post("/v1/files", files=form, headers={"Authorization": f"Bearer {customer_key}"})
        assert mine.status_code == 201
        file = mine.json()
        assert file["urls"]["get"].startswith(stack.url)
        other = _new_key(stack, monkeypatch_module, "cus_someoneelse")
        assert (
            c.get(f"/v1/files/{file['id']}", headers={"Authorization": f"Bearer {other}"}).status_code == 404
        )
        assert c.get(f"/v1/files/{file['id']}", headers={"Authorization": f"Bearer {customer_key}"}).json()[
            "size"
        ] == len(png)


def test_a_customer_who_never_polls_is_billed_once_from_the_model_servers_event(
    tmp_path: Path, customer_key: str, stack: Stack
) -> None:
    import base64
    import time

    from inference.manifest import MODELS_DIR
    from tests.support.inference import inference_server
    from tests.support.servers import bound_socket, url_of

    secret = "whsec_" + base64.b64encode(b"stack-test-inference-events-32b!").decode()
    proxy_socket = bound_socket()  # the proxy's URL is needed before either server starts
    events = f"{url_of(proxy_socket)}/internal/inference-events"
    config = dataclasses.replace(
        stack.config,
        ledger_path=stack.ledger,
        secrets=dataclasses.replace(stack.config.secrets, inference_webhook_secret=secret),
    )
    with inference_server(MODELS_DIR, webhook_secret=secret, notify_url=events) as upstream:
        config = dataclasses.replace(config, upstream_url=upstream)
        with (
            serve(create_proxy(config), sock=proxy_socket) as url,
            httpx.Client(base_url=url, timeout=30) as c,
        ):
            created = c.post(
                CREATE,
                json={"input": {"image": digit(6)[0]}},
                headers={"Authorization": f"Bearer {customer_key}"},
            ).json()
            assert created["status"] in ("starting", "processing")  # answered before it ran
            deadline = time.monotonic() + 60
            while not billed(stack.ledger, created["id"]) and time.monotonic() < deadline:
                time.sleep(0.02)  # waiting for the event's effect, bounded
            rows = billed(stack.ledger, created["id"])
            forged = c.post("/internal/inference-events", json={"id": created["id"], "status": "succeeded"})
            polled = c.get(
                f"/v1/predictions/{created['id']}", headers={"Authorization": f"Bearer {customer_key}"}
            )
    assert len(rows) == 1 and rows[0][0] == "cus_stacktest"
    assert forged.status_code == 400
    assert polled.json()["billing"]["amount"] == rows[0][2]
    assert len(billed(stack.ledger, created["id"])) == 1


def test_both_servers_refuse_the_same_replicate_calls_naming_what_is_not_offered(
    stack: Stack, customer_key: str
) -> None:
    # The two servers deploy apart (the proxy's image has no inference/), so each keeps its own
    # table; a client must meet the same refusal from either.
    assert INFERENCE_TABLE == PROXY_TABLE
    for path, methods, what in PROXY_TABLE:
        concrete = re.sub(r"\{[a-z]+(:path)?\}", "x", path)
        for method in methods:
            answers = [
                httpx.request(method, f"{stack.url}{concrete}", headers=bearer(customer_key)),
                httpx.request(method, f"{stack.upstream}{concrete}", headers=bearer(TOKEN)),
            ]
            for answer in answers:
                assert answer.status_code == 501, (method, concrete, answer.status_code, answer.text)
                assert f"{what} is not offered here" in answer.json()["detail"], answer.text


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
