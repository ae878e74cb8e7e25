"""The proxy as its users meet it, over real HTTP on 127.0.0.1, in front of a fake inference
server (a tiny Starlette app that keeps the contract and records what it was sent)."""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy import create_app
from proxy.config import RateLimit
from tests.support.billing import open_stores
from tests.support.proxy import (
    IMAGE,
    PRICE,
    TOKEN,
    FakeInference,
    answering,
    bearer,
    closed_port_url,
    issue_key,
    ledger_rows,
    predict,
    proxy_config,
    proxy_in_front_of,
)
from tests.support.servers import serve

# --- the fake inference server ----------------------------------------------------------------


# --- running the proxy ------------------------------------------------------------------------


# --- the site ---------------------------------------------------------------------------------


def test_the_built_portfolio_is_served_with_security_headers(tmp_path: Path) -> None:
    (tmp_path / "dist" / "models" / "digits").mkdir(parents=True)
    (tmp_path / "dist" / "index.html").write_text("<h1>All models</h1>")
    (tmp_path / "dist" / "models" / "digits" / "index.html").write_text("<h1>Digits</h1>")
    with proxy_in_front_of(closed_port_url(), tmp_path) as client:
        home = client.get("/")
        page = client.get("/models/digits/")
        missing = client.get("/models/nope/")
    assert home.status_code == 200 and "All models" in home.text
    assert page.status_code == 200 and "Digits" in page.text
    csp = home.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert home.headers["x-content-type-options"] == "nosniff"
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]


def test_before_the_site_is_built_the_home_page_says_to_run_build(tmp_path: Path) -> None:
    with proxy_in_front_of(closed_port_url(), tmp_path) as client:
        response = client.get("/")
        health = client.get("/healthz")
    assert response.status_code == 503
    assert "python build.py" in response.text
    assert health.status_code == 200


# --- a prediction, end to end ----------------------------------------------------------------


def test_a_visitor_gets_a_label_billed_as_the_owners_demo_cost(tmp_path: Path, fake: FakeInference) -> None:
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        response = predict(client)
    prediction = response.json()
    assert response.status_code == 201
    assert prediction["status"] == "succeeded" and prediction["output"]["label"] == "7"
    # 0.0125 s is 12.5 ms, a started millisecond billed whole: 13 ms; 13 ms at $0.0005/s is $0.0000065.
    assert prediction["metrics"]["predict_time_ms"] == 13
    assert prediction["billing"] == {"amount": "0.0000065", "currency": "usd", "billed_to": "demo"}
    usage = ledger_rows(tmp_path, "billed_usage")
    assert [(row[2], row[5], row[7]) for row in usage] == [(None, 13, "0.0000065")]
    assert ledger_rows(tmp_path, "meter_outbox") == []  # the demo is not sent to Stripe


def test_prediction_urls_point_at_the_proxy_not_the_model_server(tmp_path: Path, fake: FakeInference) -> None:
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        prediction = predict(client, wait=False).json()
        base = str(client.base_url).rstrip("/")
        followed = client.get(prediction["urls"]["get"])
    assert prediction["status"] == "starting"
    assert prediction["urls"] == {
        "get": f"{base}/v1/predictions/{prediction['id']}",
        "cancel": f"{base}/v1/predictions/{prediction['id']}/cancel",
    }
    assert followed.status_code == 200 and followed.json()["status"] == "succeeded"


def test_the_token_is_injected_and_never_returned_and_the_key_never_goes_upstream(
    tmp_path: Path, fake: FakeInference
) -> None:
    key = issue_key(tmp_path, "cus_Alice")
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        created = predict(client, bearer(key), wait=False)
        polled = client.get(f"/v1/predictions/{created.json()['id']}", headers=bearer(key))
        model = client.get("/v1/models/modelfolio/digits", headers=bearer(key))
    assert (created.status_code, polled.status_code, model.status_code) == (201, 200, 200)
    assert fake.seen and all(seen["headers"]["authorization"] == f"Bearer {TOKEN}" for seen in fake.seen)
    upstream_saw = json.dumps([{**s, "body": s["body"].decode()} for s in fake.seen])
    assert key not in upstream_saw
    for response in (created, polled, model):
        assert TOKEN not in response.text and TOKEN not in str(response.headers)


def test_the_model_object_passes_through_without_the_model_servers_address(
    tmp_path: Path, fake: FakeInference
) -> None:
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        model = client.get("/v1/models/modelfolio/digits")
        upstream_address = fake.seen[0]["headers"]["host"]
    assert model.status_code == 200
    assert model.json()["price_per_second"] == PRICE
    assert model.json()["url"] == f"{str(client.base_url).rstrip('/')}/v1/models/modelfolio/digits"
    assert upstream_address not in model.text


def test_the_prefer_header_reaches_the_model_server(tmp_path: Path, fake: FakeInference) -> None:
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        predict(client, {"Prefer": "wait=5"})
    assert fake.seen[0]["headers"]["prefer"] == "wait=5"


def test_a_version_addressed_create_works_too(tmp_path: Path, fake: FakeInference) -> None:
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        response = client.post(
            "/v1/predictions", json={"version": "v1abc", "input": IMAGE}, headers={"Prefer": "wait"}
        )
    assert response.status_code == 201
    assert response.json()["billing"]["amount"] == "0.0000065"
    assert ledger_rows(tmp_path, "predictions")[0][2] == "modelfolio/digits"


def test_the_official_replicate_client_works_with_a_customer_key(tmp_path: Path, fake: FakeInference) -> None:
    replicate = pytest.importorskip("replicate")
    key = issue_key(tmp_path, "cus_Alice")
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        api = replicate.Client(api_token=key, base_url=str(client.base_url))
        try:
            output = api.run("modelfolio/digits", input=IMAGE)
            prediction = api.models.predictions.create(model="modelfolio/digits", input=IMAGE)
            prediction.reload()
            reloaded = prediction.status
            fetched = api.predictions.get(prediction.id)
            prediction.cancel()
        finally:
            api._client.close()
    assert output["label"] == "7"
    assert reloaded == fetched.status == "succeeded"
    assert prediction.status == "canceled"
    assert prediction.urls["get"].startswith(str(client.base_url).rstrip("/"))
    assert len(ledger_rows(tmp_path, "meter_outbox")) == 2


# --- billing once ----------------------------------------------------------------------------


def test_polling_a_succeeded_prediction_ten_times_bills_it_once(tmp_path: Path, fake: FakeInference) -> None:
    key = issue_key(tmp_path, "cus_Alice")
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        prediction_id = predict(client, bearer(key), wait=False).json()["id"]
        polls = [client.get(f"/v1/predictions/{prediction_id}", headers=bearer(key)) for _ in range(10)]
    assert {poll.json()["billing"]["amount"] for poll in polls} == {"0.0000065"}
    assert len(ledger_rows(tmp_path, "billed_usage")) == 1
    outbox = ledger_rows(tmp_path, "meter_outbox")
    assert [(row[0], row[1], row[2], row[3], row[5]) for row in outbox] == [
        (prediction_id, "cus_Alice", "modelfolio_digits_predict_ms", 13, None)
    ]
    assert fake.model_fetches == 1  # the price is fetched once and cached


def test_ten_concurrent_polls_bill_once(tmp_path: Path, fake: FakeInference) -> None:
    key = issue_key(tmp_path, "cus_Alice")
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        prediction_id = predict(client, bearer(key), wait=False).json()["id"]
        url = f"{str(client.base_url).rstrip('/')}/v1/predictions/{prediction_id}"
        start = threading.Barrier(10)

        def poll(_: int) -> httpx.Response:
            start.wait()
            return httpx.get(url, headers=bearer(key), timeout=30)

        with ThreadPoolExecutor(10) as pool:
            polls = list(pool.map(poll, range(10)))
    assert [poll.status_code for poll in polls] == [200] * 10
    assert {poll.json()["billing"]["billed_to"] for poll in polls} == {"customer"}
    assert len(ledger_rows(tmp_path, "billed_usage")) == 1
    assert len(ledger_rows(tmp_path, "meter_outbox")) == 1


@pytest.mark.parametrize("final_status", ["failed", "canceled"])
def test_failed_and_canceled_predictions_are_never_billed(tmp_path: Path, final_status: str) -> None:
    fake = FakeInference(final_status=final_status)
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        created = predict(client)
        polled = client.get(f"/v1/predictions/{created.json()['id']}")
    assert created.json()["status"] == polled.json()["status"] == final_status
    assert "billing" not in created.json() and "billing" not in polled.json()
    assert ledger_rows(tmp_path, "billed_usage") == []


def test_a_customer_sees_their_usage_rounded_to_the_cent(tmp_path: Path) -> None:
    fake = FakeInference(predict_time=12.3456)  # 12346 ms at $0.0005/s = $0.006173
    key = issue_key(tmp_path, "cus_Alice")
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        for _ in range(2):
            predict(client, bearer(key))
        predict(client)  # a visitor's demo is not the customer's usage
        usage = client.get("/v1/usage", headers=bearer(key)).json()
    assert usage["predictions"] == 2 and usage["predict_time_ms"] == 24692
    assert usage["amount_exact"] == "0.012346" and usage["amount"] == "0.01"
    assert usage["by_model"]["modelfolio/digits"]["predictions"] == 2
    assert "demo" not in usage


def test_a_visitor_sees_their_demo_usage_and_what_is_left_today(tmp_path: Path, fake: FakeInference) -> None:
    with proxy_in_front_of(fake.app(), tmp_path, demo_daily_quota=5) as client:
        predict(client)
        usage = client.get("/v1/usage").json()
    assert usage["predictions"] == 1 and usage["amount_exact"] == "0.0000065"
    assert usage["demo"]["daily_quota"] == 5 and usage["demo"]["remaining_today"] == 4
    assert usage["demo"]["resets_in_s"] > 0


# --- who may see what ------------------------------------------------------------------------


def test_a_caller_gets_404_for_another_callers_prediction(tmp_path: Path, fake: FakeInference) -> None:
    alice, bob = issue_key(tmp_path, "cus_Alice"), issue_key(tmp_path, "cus_Bob")
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        prediction_id = predict(client, bearer(alice), wait=False).json()["id"]
        as_bob = client.get(f"/v1/predictions/{prediction_id}", headers=bearer(bob))
        bob_cancels = client.post(f"/v1/predictions/{prediction_id}/cancel", headers=bearer(bob))
        as_visitor = client.get(f"/v1/predictions/{prediction_id}")
        unknown = client.get("/v1/predictions/pred9999x", headers=bearer(bob))
        alice_cancels = client.post(f"/v1/predictions/{prediction_id}/cancel", headers=bearer(alice))
    assert as_bob.status_code == bob_cancels.status_code == as_visitor.status_code == 404
    assert as_bob.json() == bob_cancels.json() == as_visitor.json() == unknown.json()
    assert alice_cancels.status_code == 200 and alice_cancels.json()["status"] == "canceled"
    assert [seen["method"] for seen in fake.seen] == ["POST", "POST"]  # Bob's calls never left


def test_an_unknown_or_revoked_key_gets_401_never_the_demo(tmp_path: Path, fake: FakeInference) -> None:
    key = issue_key(tmp_path, "cus_Alice")
    with open_stores(f"sqlite:///{tmp_path / 'ledger.sqlite3'}") as stores:
        stores.ledger.revoke_api_key(key.split("_")[1], "2025-06-02T00:00:00.000000+00:00")
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        revoked = predict(client, bearer(key))
        unknown = predict(client, bearer("mf_000000000000_" + "x" * 43))
        garbage = predict(client, bearer("hello"))
        basic = predict(client, {"Authorization": "Basic dXNlcjpwYXNz"})
    assert [r.status_code for r in (revoked, unknown, garbage, basic)] == [401] * 4
    assert "revoked" in revoked.json()["detail"]
    assert revoked.headers["www-authenticate"].startswith("Bearer")
    assert fake.seen == []


def test_replicates_older_token_scheme_is_accepted(tmp_path: Path, fake: FakeInference) -> None:
    key = issue_key(tmp_path, "cus_Alice")
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        response = predict(client, {"Authorization": f"Token {key}"})
    assert response.status_code == 201 and response.json()["billing"]["billed_to"] == "customer"


# --- limits ----------------------------------------------------------------------------------


def test_past_the_demo_quota_a_visitor_gets_429_with_retry_after_and_a_readable_message(
    tmp_path: Path, fake: FakeInference
) -> None:
    key = issue_key(tmp_path, "cus_Alice")
    with proxy_in_front_of(fake.app(), tmp_path, demo_daily_quota=2) as client:
        allowed = [predict(client) for _ in range(2)]
        refused = predict(client)
        customer = predict(client, bearer(key))
    assert [r.status_code for r in allowed] == [201, 201]
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 86400
    assert refused.json()["detail"].startswith("The free demo allows 2 predictions a day from one address")
    assert "API key" in refused.json()["detail"]
    assert customer.status_code == 201  # customers are not on the demo quota


def test_the_demo_quota_survives_a_restart(tmp_path: Path, fake: FakeInference) -> None:
    with proxy_in_front_of(fake.app(), tmp_path, demo_daily_quota=2) as client:
        predict(client)
        predict(client)
    with proxy_in_front_of(fake.app(), tmp_path, demo_daily_quota=2) as client:
        assert predict(client).status_code == 429


def test_the_demo_quota_resets_at_utc_midnight(tmp_path: Path, fake: FakeInference) -> None:
    now = [datetime.datetime(2025, 6, 1, 23, 59, 30, tzinfo=datetime.UTC)]
    with serve(fake.app()) as upstream_url:
        config = proxy_config(tmp_path, upstream_url, demo_daily_quota=1)
        with serve(create_app(config, clock=lambda: now[0])) as base, httpx.Client(base_url=base) as client:
            first = predict(client)
            refused = predict(client)
            now[0] += datetime.timedelta(seconds=31)
            next_day = predict(client)
    assert (first.status_code, refused.status_code, next_day.status_code) == (201, 429, 201)
    assert refused.headers["retry-after"] == "30"


def test_past_a_rate_limit_a_caller_gets_429_with_retry_after(tmp_path: Path, fake: FakeInference) -> None:
    limits = (RateLimit(name="predictions", limit=3, period=3600),)
    with proxy_in_front_of(fake.app(), tmp_path, ratelimits=limits) as client:
        allowed = [predict(client, wait=False) for _ in range(3)]
        refused = predict(client, wait=False)
        poll = client.get(f"/v1/predictions/{allowed[0].json()['id']}")
    assert [r.status_code for r in allowed] == [201] * 3
    assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 3600
    assert "3 predictions every 3600 seconds" in refused.json()["detail"]
    assert poll.status_code == 200  # polls are not predictions


# --- checks before forwarding ----------------------------------------------------------------


def test_a_50_mb_body_gets_413_and_the_proxy_keeps_serving(tmp_path: Path, fake: FakeInference) -> None:
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        response = client.post(
            "/v1/models/modelfolio/digits/predictions",
            content=b"x" * 50_000_000,
            headers={"Content-Type": "application/json"},
        )
        after = predict(client)
    assert response.status_code == 413
    assert "10,485,760-byte limit" in response.json()["detail"]
    assert after.status_code == 201
    assert [seen["method"] for seen in fake.seen] == ["POST", "GET"]  # only `after` went upstream


def test_a_chunked_body_over_the_limit_gets_413(tmp_path: Path, fake: FakeInference) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"input": {"image": "'
        for _ in range(20):
            yield b"A" * 1000

    with proxy_in_front_of(fake.app(), tmp_path, max_body_bytes=5000) as client:
        response = client.post(
            "/v1/models/modelfolio/digits/predictions",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )
        after = predict(client)
    assert response.status_code == 413
    assert "5,000-byte limit" in response.json()["detail"]
    assert after.status_code == 201
    assert all(len(seen["body"]) <= 5000 for seen in fake.seen)


def test_a_body_under_the_limit_streams_through_unchanged(tmp_path: Path, fake: FakeInference) -> None:
    body = json.dumps({"input": IMAGE}).encode()
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        response = client.post(
            "/v1/models/modelfolio/digits/predictions",
            content=iter([body[:9], body[9:]]),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 201
    assert fake.seen[0]["body"] == body


@pytest.mark.parametrize(
    ("content_type", "named"), [("text/plain", "'text/plain'"), (None, "no Content-Type")]
)
def test_a_wrong_content_type_gets_415_naming_it(
    tmp_path: Path, fake: FakeInference, content_type: str | None, named: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        response = client.post("/v1/models/modelfolio/digits/predictions", content=b"{}", headers=headers)
    assert response.status_code == 415
    assert named in response.json()["detail"] and "application/json" in response.json()["detail"]
    assert fake.seen == []


def test_malformed_json_gets_the_model_servers_400_unchanged(tmp_path: Path, fake: FakeInference) -> None:
    with proxy_in_front_of(fake.app(), tmp_path, demo_daily_quota=1) as client:
        response = client.post(
            "/v1/models/modelfolio/digits/predictions",
            content=b'{"input": ',
            headers={"Content-Type": "application/json"},
        )
        after = predict(client)
    assert response.status_code == 400
    assert response.json() == {"detail": "the body is not valid JSON"}
    assert after.status_code == 201  # a refused create does not use the demo quota


def test_an_unknown_api_route_gets_404_json_and_a_wrong_method_405(tmp_path: Path) -> None:
    with proxy_in_front_of(closed_port_url(), tmp_path) as client:
        unknown = client.get("/v1/nothing/here")
        wrong_method = client.delete("/v1/predictions/pred0000x")
    assert unknown.status_code == 404 and "detail" in unknown.json()
    assert wrong_method.status_code == 405 and "detail" in wrong_method.json()


def test_path_tricks_never_reach_another_upstream_route(tmp_path: Path, fake: FakeInference) -> None:
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        dotted = client.get("/v1/models/%2E%2E/predictions")
        encoded_slash = client.get("/v1/predictions/..%2Fmodels")
    assert dotted.status_code == encoded_slash.status_code == 404
    assert fake.seen == []


# --- when the model server is unwell --------------------------------------------------------


def test_upstream_down_gives_503_with_retry_after(tmp_path: Path) -> None:
    url = closed_port_url()
    with proxy_in_front_of(url, tmp_path) as client:
        response = predict(client)
        ready = client.get("/readyz")
    assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
    assert "not reachable" in response.json()["detail"]
    assert url not in response.text and "127.0.0.1" not in response.text
    assert ready.status_code == 503 and "retry-after" in ready.headers


def test_a_loading_model_servers_503_passes_through_with_retry_after(tmp_path: Path) -> None:
    upstream = answering(503, {"detail": "models are loading"}, {"Retry-After": "7"})
    with proxy_in_front_of(upstream, tmp_path) as client:
        response = predict(client)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.json() == {"detail": "models are loading"}


def test_a_model_server_that_refuses_the_token_gives_502_not_401(tmp_path: Path) -> None:
    upstream = answering(401, {"detail": "missing or wrong inference token"})
    with proxy_in_front_of(upstream, tmp_path) as client:
        response = predict(client)
    assert response.status_code == 502
    assert "credentials" in response.json()["detail"]


def test_a_model_server_answering_nonsense_gives_502(tmp_path: Path) -> None:
    async def nonsense(request: Request) -> Response:
        return Response("<html>oops</html>", status_code=201, media_type="text/html")

    upstream = Starlette(routes=[Route("/{path:path}", nonsense, methods=["GET", "POST"])])
    with proxy_in_front_of(upstream, tmp_path) as client:
        response = predict(client)
        model = client.get("/v1/models/modelfolio/digits")
    assert response.status_code == model.status_code == 502
    assert response.json()["detail"] == "the model server sent an answer the proxy could not read"


def test_a_model_server_that_hangs_gives_504(tmp_path: Path) -> None:
    release = threading.Event()

    async def hang(request: Request) -> Response:
        await anyio.to_thread.run_sync(release.wait)
        return JSONResponse({})

    upstream = Starlette(routes=[Route("/{path:path}", hang, methods=["POST"])])
    try:
        with proxy_in_front_of(upstream, tmp_path, upstream_timeout_s=0.2) as client:
            response = predict(client)
            release.set()
    finally:
        release.set()
    assert response.status_code == 504
    assert "did not answer in time" in response.json()["detail"]


def test_readyz_is_200_when_the_ledger_and_model_server_are_ready(
    tmp_path: Path, fake: FakeInference
) -> None:
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": True, "model_server": True}


# --- browsers on other origins ---------------------------------------------------------------


def test_an_allowed_origin_may_call_the_api_from_a_browser(tmp_path: Path, fake: FakeInference) -> None:
    origin = "https://portfolio.example"
    with proxy_in_front_of(fake.app(), tmp_path, allowed_origins=(origin,)) as client:
        preflight = client.options(
            "/v1/models/modelfolio/digits/predictions",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, prefer",
            },
        )
        other = client.options(
            "/v1/models/modelfolio/digits/predictions",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert other.status_code == 400


# --- logs ------------------------------------------------------------------------------------


def test_no_secret_key_or_address_appears_in_the_logs(
    tmp_path: Path, fake: FakeInference, caplog: pytest.LogCaptureFixture
) -> None:
    key = issue_key(tmp_path, "cus_Alice")
    caplog.set_level("INFO", logger="modelfolio.proxy")
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        created = predict(client, bearer(key)).json()
        predict(client)
        predict(client, bearer("mf_000000000000_" + "y" * 43))
        client.get("/v1/usage", headers=bearer(key))
    lines = [json.loads(record.getMessage()) for record in caplog.records]
    requests = [line for line in lines if line["event"] == "request"]
    billed = [line for line in lines if line["event"] == "billed"]
    assert {"caller": "customer", "prediction_id": created["id"], "status": 201}.items() <= requests[
        0
    ].items()
    assert [line["billed_to"] for line in billed] == ["customer", "demo"]
    for secret in (TOKEN, key, "y" * 43, "127.0.0.1", "cus_Alice"):
        assert secret not in caplog.text
