"""Idempotency-Key on creates: a retry of a create whose answer was lost gets the prediction the
first try made, never a second one, and never a second bill."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from proxy.config import LedgerConfig
from tests.support.billing import open_stores
from tests.support.databases import new_database
from tests.support.proxy import IMAGE, FakeInference, bearer, issue_key, proxy_in_front_of
from tests.support.servers import serve

CREATE = "/v1/models/modelfolio/digits/predictions"


def create(client: httpx.Client, key: str, idempotency_key: str, body: dict | None = None) -> httpx.Response:
    headers = {**bearer(key), "Idempotency-Key": idempotency_key, "Prefer": "wait"}
    return client.post(CREATE, json=body or {"input": IMAGE}, headers=headers)


def billed(url: str) -> list[str]:
    with open_stores(url) as stores, stores.usage.database.transaction() as cur:
        cur.execute("SELECT prediction_id FROM billed_usage ORDER BY prediction_id")
        return [row[0] for row in cur.fetchall()]


class LosesFirstAnswer(FakeInference):
    """Creates the prediction, then the connection drops before its answer: a proxy that died, or
    a network that failed, after the model server took the create."""

    lost = 0

    async def put(self, request: Request) -> Response:
        answer = await super().put(request)
        if self.lost == 0:
            self.lost += 1
            raise ConnectionResetError("the answer never left")
        return answer


def test_a_retry_with_the_same_key_gets_the_same_prediction_billed_once(
    tmp_path: Path, fake: FakeInference
) -> None:
    key = issue_key(tmp_path, "cus_Alice")
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        first = create(client, key, "order-17")
        again = create(client, key, "order-17")
        other = create(client, key, "order-18")
    assert (first.status_code, again.status_code, other.status_code) == (201, 201, 201)
    assert again.json()["id"] == first.json()["id"] != other.json()["id"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert again.json()["billing"] == first.json()["billing"]
    assert billed(f"sqlite:///{tmp_path / 'ledger.sqlite3'}") == sorted(
        [first.json()["id"], other.json()["id"]]
    )


def test_a_create_whose_answer_was_lost_is_found_by_its_retry_not_made_twice(tmp_path: Path) -> None:
    upstream = LosesFirstAnswer()
    key = issue_key(tmp_path, "cus_Alice")
    with proxy_in_front_of(upstream.app(), tmp_path) as client:
        lost = create(client, key, "lost-answer")
        retried = create(client, key, "lost-answer")
    assert lost.status_code == 502  # the caller never saw the prediction...
    assert retried.status_code == 201 and retried.json()["status"] == "succeeded"  # ...its retry does
    assert len(upstream._predictions) == 1  # one prediction ran, not two
    assert billed(f"sqlite:///{tmp_path / 'ledger.sqlite3'}") == [retried.json()["id"]]


def test_the_same_key_with_another_request_is_refused_and_keys_are_each_callers_own(
    tmp_path: Path, fake: FakeInference
) -> None:
    alice, bob = issue_key(tmp_path, "cus_Alice"), issue_key(tmp_path, "cus_Bob")
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        first = create(client, alice, "k1")
        changed = create(client, alice, "k1", {"input": {"image": "data:image/png;base64,AAAA"}})
        reordered = client.post(  # the same request, other bytes: the same prediction
            CREATE,
            content=b'{ "input" : {"image": "data:image/png;base64,iVBORw0KGgo="} }',
            headers={**bearer(alice), "Idempotency-Key": "k1", "content-type": "application/json"},
        )
        bobs = create(client, bob, "k1")
    assert changed.status_code == 422 and "different request" in changed.json()["detail"]
    assert reordered.status_code == 201 and reordered.json()["id"] == first.json()["id"]
    assert bobs.status_code == 201 and bobs.json()["id"] != first.json()["id"]


@pytest.mark.parametrize("bad", [b"", b"has space", b"x" * 256, "é".encode()])
def test_a_malformed_key_is_a_400_naming_the_header(tmp_path: Path, fake: FakeInference, bad: bytes) -> None:
    key = issue_key(tmp_path, "cus_Alice")
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        headers: dict[str, str | bytes] = {**bearer(key), "Idempotency-Key": bad}
        answer = client.post(CREATE, json={"input": IMAGE}, headers=headers)
    assert answer.status_code == 400 and "Idempotency-Key" in answer.json()["detail"]
    assert fake.seen == []


def test_two_proxies_on_one_database_answer_one_key_with_one_prediction(
    tmp_path: Path, fake: FakeInference, postgres: str
) -> None:
    url = new_database(postgres)
    key = issue_key(tmp_path, "cus_Alice", url)
    shared = {"ledger": LedgerConfig(url=url)}
    with (
        serve(fake.app()) as upstream,
        proxy_in_front_of(upstream, tmp_path / "a", **shared) as one,
        proxy_in_front_of(upstream, tmp_path / "b", **shared) as other,
    ):
        request_key = str(uuid.uuid4())
        first = create(one, key, request_key)
        second = create(other, key, request_key)
    assert first.json()["id"] == second.json()["id"]
    assert billed(url) == [first.json()["id"]]
