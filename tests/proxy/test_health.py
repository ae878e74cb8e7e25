"""What operators watch: /readyz names what is down, /metrics shows the traffic and the money
waiting for Stripe, and an outage of the database is a 503 to callers, never a 500 or a lost bill."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from proxy.app import create_app
from proxy.config import BillingConfig, LedgerConfig, LimitsConfig, Secrets
from tests.support.billing import wait_until
from tests.support.databases import new_database, postgres_server
from tests.support.proxy import (
    TOKEN,
    FakeInference,
    bearer,
    issue_key,
    predict,
    proxy_config,
    proxy_in_front_of,
)
from tests.support.servers import free_port, serve


def test_readyz_names_a_redis_that_is_gone(tmp_path: Path, fake: FakeInference) -> None:
    gone = LimitsConfig(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with proxy_in_front_of(fake.app(), tmp_path, limits=gone) as client:
        answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert answer.json()["checks"] == {"database": True, "redis": False, "model_server": True}
    assert answer.json()["detail"] == "not ready: the redis cannot be reached"


def test_metrics_count_requests_by_route_and_show_the_outbox(tmp_path: Path, fake: FakeInference) -> None:
    key = issue_key(tmp_path, "cus_Alice")
    with proxy_in_front_of(fake.app(), tmp_path) as client:  # no Stripe key: events wait in the outbox
        created = predict(client, bearer(key))
        client.get(f"/v1/predictions/{created.json()['id']}", headers=bearer(key))
        client.get("/v1/predictions/unknown0", headers=bearer(key))
        text = client.get("/metrics").text
    route = 'route="/v1/predictions/{id}"'
    assert f'modelfolio_proxy_requests_total{{method="GET",{route},status="200"}} 1.0' in text
    assert f'modelfolio_proxy_requests_total{{method="GET",{route},status="404"}} 1.0' in text
    assert "modelfolio_outbox_backlog 1.0" in text and "modelfolio_meter_dead_letters 0.0" in text
    assert "modelfolio_outbox_oldest_age_seconds" in text and TOKEN not in text


def test_metrics_through_the_load_balancer_need_the_metrics_token(
    tmp_path: Path, fake: FakeInference
) -> None:
    secrets = Secrets(inference_token=TOKEN, metrics_token="m-tok")
    config = proxy_config(tmp_path, "http://127.0.0.1:9", secrets=secrets)
    public = {"X-Forwarded-For": "203.0.113.9"}  # as the load balancer passes a visitor on
    with serve(create_app(config)) as url:
        refused = httpx.get(f"{url}/metrics", headers=public)
        wrong = httpx.get(f"{url}/metrics", headers={**public, "Authorization": "Bearer nope"})
        allowed = httpx.get(f"{url}/metrics", headers={**public, "Authorization": "Bearer m-tok"})
        scraper = httpx.get(f"{url}/metrics")  # Prometheus on the private network, straight here
    assert refused.status_code == wrong.status_code == 401
    assert allowed.status_code == scraper.status_code == 200
    assert "modelfolio_proxy_requests_total" in allowed.text


def test_a_database_outage_is_a_503_and_the_bill_is_written_once_it_is_back(
    tmp_path: Path, fake: FakeInference
) -> None:
    with postgres_server() as server, serve(fake.app()) as upstream:
        url = new_database(server.url)
        key = issue_key(tmp_path, "cus_Alice", url)
        config = proxy_config(tmp_path, upstream, ledger=LedgerConfig(url=url, pool_size=2))
        with serve(create_app(config)) as proxy, httpx.Client(base_url=proxy, timeout=30) as client:
            created = predict(client, bearer(key), wait=False)  # created; not done yet
            server.stop()
            during = [
                predict(client, bearer(key)),
                client.get(f"/v1/predictions/{created.json()['id']}", headers=bearer(key)),
                client.get("/readyz"),
            ]
            server.start()
            poll = f"/v1/predictions/{created.json()['id']}"
            # As a client told Retry-After does: ask again until the proxy has its database back.
            wait_until(lambda: client.get(poll, headers=bearer(key)).status_code != 503, "the database")
            after = client.get(poll, headers=bearer(key))
            again = client.get(poll, headers=bearer(key))
            usage = client.get("/v1/usage", headers=bearer(key)).json()
    assert [answer.status_code for answer in during] == [503, 503, 503]
    for answer in during[:2]:
        assert answer.headers["retry-after"] == "5"
        assert "try again" in answer.json()["detail"] and str(server.port) not in answer.text
        assert "output" not in answer.json()  # a result is never handed out unbilled
    assert during[2].json()["checks"]["database"] is False
    assert after.status_code == again.status_code == 200 and after.json()["status"] == "succeeded"
    assert usage["predictions"] == 1  # billed once, when the database came back


def test_without_stripe_the_outbox_backlog_is_a_readyz_warning_and_a_reminder_in_the_log(
    tmp_path: Path, fake: FakeInference, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="modelfolio.proxy")
    key = issue_key(tmp_path, "cus_Alice")
    billing = BillingConfig(reminder_s=0.05)
    with proxy_in_front_of(fake.app(), tmp_path, billing=billing) as client:
        assert "warnings" not in client.get("/readyz").json()  # nothing waits yet
        predict(client, bearer(key))
        ready = client.get("/readyz")
        public = client.get("/readyz", headers={"X-Forwarded-For": "203.0.113.9"})
        wait_until(
            lambda: any('"outbox_backlog":1' in m for m in caplog.messages), "a reminder with the backlog"
        )
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    (warning,) = ready.json()["warnings"]
    assert "STRIPE_SECRET_KEY" in warning and "1 meter event(s) wait" in warning
    (told,) = public.json()["warnings"]  # the public learns that bills wait, not how many
    assert public.status_code == 200 and "STRIPE_SECRET_KEY" in told and not any(c.isdigit() for c in told)
    reminders = [m for m in caplog.messages if '"event":"metering_disabled"' in m]
    assert len(reminders) >= 2 and '"outbox_backlog":0' in reminders[0]
