"""What the inference server lists and describes, as Replicate's clients read it: pages with
cursors, versions with their time, a default example really run, a JS-style upload, and a clear
answer to bad list queries and to what is not offered."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from tests.support.inference import auth, inference_server, png_data_url
from tests.support.paths import FIXTURES

CREATE = "/v1/models/modelfolio/shapes/predictions"


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with (
        inference_server(FIXTURES / "models") as url,
        httpx.Client(base_url=url, headers=auth(), timeout=30) as c,
    ):
        yield c


def test_predictions_are_paged_newest_first_with_next_and_previous(client: httpx.Client) -> None:
    made = [
        client.post(
            CREATE, json={"input": {"image": png_data_url((10 + i, 10))}}, headers={"Prefer": "wait"}
        ).json()["id"]
        for i in range(3)
    ]
    first = client.get("/v1/predictions", params={"limit": 2}).json()
    assert [p["id"] for p in first["results"]] == made[::-1][:2]
    assert first["previous"] is None
    second = client.get(first["next"]).json()
    assert second["results"][0]["id"] == made[0]
    back = client.get(second["previous"]).json()
    assert [p["id"] for p in back["results"]] == made[::-1][:2]


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'["sideways","a","b"]').decode()}, "cursor"),
        ({"limit": "100000"}, "'limit' must be a whole number from 1 to 100"),
        ({"limit": "0"}, "'limit'"),
        ({"page": "2"}, "unknown query parameter 'page'"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/predictions", "/v1/models", "/v1/files"])
def test_a_bad_list_query_is_a_400_that_says_what(
    client: httpx.Client, path: str, query: dict[str, str], detail: str
) -> None:
    answer = client.get(path, params=query)
    assert answer.status_code == 400 and detail in answer.json()["detail"]


def test_a_version_has_its_time_and_is_listed(client: httpx.Client) -> None:
    model = client.get("/v1/models/modelfolio/shapes").json()
    version = model["latest_version"]
    assert datetime.fromisoformat(version["created_at"]).tzinfo is not None
    listed = client.get("/v1/models/modelfolio/shapes/versions").json()
    assert [v["id"] for v in listed["results"]] == [version["id"]]
    assert client.get(f"/v1/models/modelfolio/shapes/versions/{version['id']}").json() == version
    assert client.get("/v1/models/modelfolio/shapes/versions/nope").status_code == 404
    assert client.get("/v1/models/modelfolio/nosuch/versions").status_code == 404


def test_runs_are_counted(client: httpx.Client) -> None:
    before = client.get("/v1/models/modelfolio/shapes").json()["run_count"]
    client.post(CREATE, json={"input": {"image": png_data_url()}}, headers={"Prefer": "wait"})
    assert client.get("/v1/models/modelfolio/shapes").json()["run_count"] == before + 1


def test_an_upload_takes_its_metadata_as_a_json_file_part_as_the_js_client_sends_it(
    client: httpx.Client,
) -> None:
    files = [
        ("content", ("buffer_1", b"\x89PNG not really", "application/octet-stream")),
        ("metadata", ("blob", json.dumps({"from": "js"}).encode(), "application/json")),
    ]
    made = client.post("/v1/files", files=files)
    assert made.status_code == 201 and made.json()["metadata"] == {"from": "js"}
    assert made.json()["id"] in [f["id"] for f in client.get("/v1/files").json()["results"]]
    three = [*files, ("extra", ("more", b"x", "text/plain"))]
    assert client.post("/v1/files", files=three).status_code == 400  # still a bounded form


def test_streamed_output_and_replicate_features_not_offered_are_501s_naming_them(
    client: httpx.Client,
) -> None:
    streamed = client.post(CREATE, json={"input": {"image": png_data_url()}, "stream": True})
    assert streamed.status_code == 501 and "streamed output is not offered" in streamed.json()["detail"]
    for method, path, named in [
        ("GET", "/v1/trainings", "trainings"),
        ("POST", "/v1/models/modelfolio/shapes/versions/abc/trainings", "trainings"),
        ("GET", "/v1/deployments/me/mine", "deployments"),
        ("GET", "/v1/hardware", "hardware"),
        ("GET", "/v1/collections", "collections"),
        ("POST", "/v1/models", "creating models"),
        ("DELETE", "/v1/models/modelfolio/shapes", "deleting models"),
    ]:
        answer = client.request(method, path)
        assert answer.status_code == 501, path
        assert named in answer.json()["detail"] and "not offered" in answer.json()["detail"]


def test_the_document_describes_the_lists_and_every_error_status(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/predictions", "/v1/models/{owner}/{name}/versions", "/v1/files"} <= set(spec["paths"])
    listed = spec["paths"]["/v1/predictions"]["get"]
    assert {"200", "400", "401"} <= set(listed["responses"])
    create = spec["paths"][CREATE]["post"]
    assert {"400", "401", "404", "413", "415", "422", "429", "501", "503"} <= set(create["responses"])
    assert set(create["responses"]["201"]["links"]) == {"GetPrediction", "CancelPrediction"}
