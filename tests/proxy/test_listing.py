"""A caller's own predictions, listed by the proxy from its ledger (in front of a fake model
server): newest first, page by page, nobody else's, and a clear 4xx for a bad list request."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from proxy.records import LOST
from tests.support.inference import TOKEN
from tests.support.proxy import FakeInference, answering, bearer, issue_key, predict, proxy_in_front_of


def test_a_customer_pages_through_its_own_predictions_newest_first(tmp_path: Path) -> None:
    mine, theirs = issue_key(tmp_path, "cus_mine"), issue_key(tmp_path, "cus_theirs")
    with proxy_in_front_of(FakeInference().app(), tmp_path) as client:
        made = [predict(client, bearer(mine)).json()["id"] for _ in range(3)]
        other = predict(client, bearer(theirs)).json()["id"]
        first = client.get("/v1/predictions", params={"limit": 2}, headers=bearer(mine)).json()
        second = client.get(first["next"], headers=bearer(mine)).json()
        back = client.get(second["previous"], headers=bearer(mine)).json()
        everything = client.get("/v1/predictions", headers=bearer(mine)).json()
        anonymous = client.get("/v1/predictions")
    assert [p["id"] for p in first["results"]] == made[::-1][:2] and first["previous"] is None
    assert [p["id"] for p in second["results"]] == made[:1] and second["next"] is None
    assert back == first
    assert other not in [p["id"] for p in everything["results"]]
    assert all(p["billing"]["billed_to"] == "customer" for p in everything["results"])
    assert all(p["urls"]["get"].startswith(str(client.base_url).rstrip("/")) for p in everything["results"])
    assert anonymous.status_code == 401 and "API key" in anonymous.json()["detail"]


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ({"cursor": "%%%"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'{"a": 1}').decode()}, "cursor"),
        ({"limit": "1000000"}, "'limit' must be a whole number from 1 to 100"),
        ({"limit": "-1"}, "'limit'"),
        ({"order": "asc"}, "unknown query parameter 'order'"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/predictions", "/v1/files"])
def test_a_bad_list_request_is_a_400_naming_the_problem(
    tmp_path: Path, path: str, query: dict[str, str], detail: str
) -> None:
    key = issue_key(tmp_path, "cus_lists")
    with proxy_in_front_of(FakeInference().app(), tmp_path) as client:
        answer = client.get(path, params=query, headers=bearer(key))
    assert answer.status_code == 400 and detail in answer.json()["detail"]
    assert TOKEN not in answer.text


def test_the_proxy_never_answers_405_to_a_method_it_allows(tmp_path: Path) -> None:
    with proxy_in_front_of(FakeInference().app(), tmp_path) as client:
        wrong = client.delete("/v1/predictions")
        unknown_model = client.post("/v1/models/modelfolio/nosuchmodel/predictions", json={"input": {}})
        trainings = client.get("/v1/trainings")
    assert wrong.status_code == 405 and "GET or POST" in wrong.json()["detail"]
    assert unknown_model.status_code != 405
    assert trainings.status_code == 501 and "trainings" in trainings.json()["detail"]


def test_the_document_is_public_and_describes_every_error_status(tmp_path: Path) -> None:
    with proxy_in_front_of(FakeInference().app(), tmp_path) as client:
        spec = client.get("/openapi.json").json()
        page = client.get("/docs").text
    assert spec["security"] == [{}, {"key": []}]  # a key, or none: the demo
    statuses = {
        code for methods in spec["paths"].values() for op in methods.values() for code in op["responses"]
    }
    assert {"400", "401", "404", "413", "415", "422", "429", "501", "503"} <= statuses
    usage = spec["paths"]["/v1/usage"]["get"]
    assert {"200", "401", "429"} <= set(usage["responses"])
    assert "Retry-After" in usage["responses"]["429"]["headers"]
    assert "GET /v1/usage" in page and TOKEN not in page and TOKEN not in str(spec)


def test_a_prediction_the_model_server_lost_reads_failed_but_one_it_cannot_answer_for_now_does_not(
    tmp_path: Path,
) -> None:
    key = issue_key(tmp_path, "cus_lost")
    with proxy_in_front_of(FakeInference().app(), tmp_path) as client:
        started = predict(client, bearer(key), wait=False).json()
    assert started["status"] == "starting"
    loading = answering(503, {"detail": "models still loading"}, {"retry-after": "2"})
    with proxy_in_front_of(loading, tmp_path) as client:
        listed = client.get("/v1/predictions", headers=bearer(key)).json()["results"]
        polled = client.get(f"/v1/predictions/{started['id']}", headers=bearer(key))
    assert [p["status"] for p in listed] == ["starting"]
    assert polled.status_code == 503 and polled.headers["retry-after"] == "2"
    forgot = answering(404, {"detail": "no such prediction"})
    with proxy_in_front_of(forgot, tmp_path) as client:
        listed = client.get("/v1/predictions", headers=bearer(key)).json()["results"]
        polled = client.get(f"/v1/predictions/{started['id']}", headers=bearer(key)).json()
    assert [(p["id"], p["status"], p["error"]) for p in listed] == [(started["id"], "failed", LOST)]
    assert (polled["status"], polled["error"]) == ("failed", LOST)
