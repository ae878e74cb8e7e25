"""The result cache: the same picture sent to the same model version again is answered from the
cache, as a new prediction of its caller's, billed at the configured fraction of the compute."""

from __future__ import annotations

import base64
import hashlib
from decimal import Decimal
from pathlib import Path

import httpx

from proxy.cache import ResultCache
from proxy.config import CacheConfig, CacheRule, LimitsConfig
from tests.support.billing import open_stores
from tests.support.proxy import FakeInference, bearer, issue_key, proxy_in_front_of
from tests.support.servers import serve

CREATE = "/v1/models/modelfolio/digits/predictions"
PICTURE = base64.b64encode(b"\x89PNG\r\n\x1a\n a picture").decode()
OTHER = base64.b64encode(b"\x89PNG\r\n\x1a\n another picture").decode()


def cached(fraction: str = "0.1") -> CacheConfig:
    return CacheConfig({"modelfolio/digits": CacheRule(ttl_s=3600, bill_fraction=Decimal(fraction))})


def predict(client: httpx.Client, key: str | None, picture: str = PICTURE) -> httpx.Response:
    headers = {"Prefer": "wait", **(bearer(key) if key else {})}
    return client.post(CREATE, json={"input": {"image": f"data:image/png;base64,{picture}"}}, headers=headers)


def usage_lines(tmp_path: Path) -> list[tuple[str, int, str, str]]:
    query = "SELECT prediction_id, predict_time_ms, amount, kind FROM billed_usage ORDER BY created_at"
    with (
        open_stores(f"sqlite:///{tmp_path / 'ledger.sqlite3'}") as stores,
        stores.usage.database.transaction() as cur,
    ):
        cur.execute(query)
        return [tuple(row) for row in cur.fetchall()]


def test_the_same_picture_again_is_answered_from_the_cache_and_billed_a_tenth(
    tmp_path: Path, fake: FakeInference
) -> None:
    fake.predict_time = 1.25
    key = issue_key(tmp_path, "cus_Alice")
    with proxy_in_front_of(fake.app(), tmp_path, cache=cached("0.1")) as client:
        first = predict(client, key)
        creates = len([s for s in fake.seen if s["method"] == "POST"])
        again = predict(client, key)
        polled = client.get(f"/v1/predictions/{again.json()['id']}", headers=bearer(key))
        metrics = client.get("/metrics").text
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] != first.json()["id"]
    assert again.json()["cached"] is True and "cached" not in first.json()
    assert again.json()["output"] == first.json()["output"] and again.json()["status"] == "succeeded"
    assert len([s for s in fake.seen if s["method"] == "POST"]) == creates  # the model did not run again
    assert polled.status_code == 200 and polled.json()["id"] == again.json()["id"]
    assert usage_lines(tmp_path) == [
        (first.json()["id"], 1250, "0.000625", "compute"),
        (again.json()["id"], 125, "0.0000625", "cache_hit"),
    ]
    assert again.json()["billing"] == {"amount": "0.0000625", "currency": "usd", "billed_to": "customer"}
    assert "modelfolio_cache_hits_total 1.0" in metrics and "modelfolio_cache_misses_total 1.0" in metrics


def test_another_picture_or_an_uncached_model_runs_the_model(tmp_path: Path, fake: FakeInference) -> None:
    with proxy_in_front_of(fake.app(), tmp_path, cache=cached()) as client:
        first = predict(client, None)
        other = predict(client, None, OTHER)
        elsewhere = client.post(
            "/v1/models/modelfolio/defects/predictions",
            json={"input": {"image": f"data:image/png;base64,{PICTURE}"}},
            headers={"Prefer": "wait"},
        )
        elsewhere_again = client.post(
            "/v1/models/modelfolio/defects/predictions",
            json={"input": {"image": f"data:image/png;base64,{PICTURE}"}},
            headers={"Prefer": "wait"},
        )
    assert "cached" not in first.json() and "cached" not in other.json()
    assert "cached" not in elsewhere.json() and "cached" not in elsewhere_again.json()


def test_a_hit_is_its_callers_alone_and_a_free_hit_sends_nothing_to_stripe(
    tmp_path: Path, fake: FakeInference
) -> None:
    alice, bob = issue_key(tmp_path, "cus_Alice"), issue_key(tmp_path, "cus_Bob")
    with proxy_in_front_of(fake.app(), tmp_path, cache=cached("0")) as client:
        predict(client, alice)
        hit = predict(client, bob)
        alices_view = client.get(f"/v1/predictions/{hit.json()['id']}", headers=bearer(alice))
        canceled = client.post(f"/v1/predictions/{hit.json()['id']}/cancel", headers=bearer(bob))
    assert hit.json()["cached"] is True and hit.json()["billing"]["amount"] == "0"
    assert alices_view.status_code == 404  # bob's answer, even though alice's compute made it
    assert canceled.status_code == 200 and canceled.json()["status"] == "succeeded"
    with open_stores(f"sqlite:///{tmp_path / 'ledger.sqlite3'}") as stores:
        queued = [event.prediction_id for event in stores.usage.undelivered_meter_events()]
    assert hit.json()["id"] not in queued  # zero milliseconds: no meter event to send


def test_proxies_sharing_redis_share_the_cache(tmp_path: Path, fake: FakeInference, redis_url: str) -> None:
    shared = {"cache": cached(), "limits": LimitsConfig(redis_url=redis_url)}
    with (
        serve(fake.app()) as upstream,
        proxy_in_front_of(upstream, tmp_path / "a", **shared) as one,
        proxy_in_front_of(upstream, tmp_path / "b", **shared) as other,
    ):
        first = predict(one, None)
        hit = predict(other, None)
    assert "cached" not in first.json() and hit.json()["cached"] is True


def test_a_picture_is_keyed_by_its_bytes_whether_sent_inline_or_uploaded() -> None:
    cache = ResultCache({}, None)
    data = base64.b64decode(PICTURE)
    digest = hashlib.sha256(data).hexdigest()
    inline = cache.key("o/m", "v1", {"image": f"data:image/png;base64,{PICTURE}", "scale": 2}, lambda _: None)
    upload = "https://models.example.com/v1/files/" + "a" * 26
    uploaded = cache.key("o/m", "v1", {"scale": 2, "image": upload}, lambda file_id: digest)
    assert inline == uploaded is not None
    assert (
        cache.key("o/m", "v2", {"image": f"data:image/png;base64,{PICTURE}", "scale": 2}, lambda _: None)
        != inline
    )
    assert cache.key("o/m", "v1", {"image": "https://elsewhere.example/cat.png"}, lambda _: None) is None
