"""Webhooks from the inference server: signed with Standard Webhooks, filtered, the final one retried."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.inference import auth, inference_server, png_data_url
from tests.support.paths import FIXTURES
from tests.support.servers import serve

SECRET = "whsec_" + base64.b64encode(b"modelfolio-test-webhook-secret!!").decode()
CREATE = "/v1/models/modelfolio/shapes/predictions"


@dataclass
class Receiver:
    """A webhook endpoint: verifies each delivery as a receiver must, and can refuse the first few."""

    refuse_first: int = 0
    slow_start_s: float = 0.0  # a receiver that takes this long over the "start" event
    events: list[tuple[str, dict]] = field(default_factory=list)  # (webhook-id, prediction)
    attempts: int = 0
    completed: threading.Event = field(default_factory=threading.Event)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        payload = Webhook(SECRET).verify(body, dict(request.headers))  # raises if forged
        self.attempts += 1
        if self.attempts <= self.refuse_first:
            return Response(status_code=500)
        if payload["status"] == "processing":
            await asyncio.sleep(self.slow_start_s)
        self.events.append((request.headers["webhook-id"], payload))
        if payload["status"] in ("succeeded", "failed", "canceled"):
            self.completed.set()
        return Response(status_code=204)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with inference_server(FIXTURES / "models", webhook_secret=SECRET, webhook_backoff_s=0.001) as url:
        yield url


def receive(receiver: Receiver) -> Iterator[str]:
    app = Starlette(routes=[Route("/hook", receiver.endpoint, methods=["POST"])])
    return serve(app)


def test_start_and_completed_arrive_signed_with_the_result(server: str) -> None:
    receiver = Receiver()
    with receive(receiver) as hook, httpx.Client(base_url=server, headers=auth()) as c:
        created = c.post(
            CREATE, json={"input": {"image": png_data_url((7, 5))}, "webhook": f"{hook}/hook"}
        ).json()
        assert receiver.completed.wait(30)
    kinds = [payload["status"] for _, payload in receiver.events]
    assert kinds == ["processing", "succeeded"]
    assert receiver.events[-1][1]["id"] == created["id"]
    assert receiver.events[-1][1]["output"]["width"] == 7.0


def test_a_receiver_slow_to_take_the_start_event_still_gets_it_before_completed(server: str) -> None:
    receiver = Receiver(slow_start_s=0.5)  # the prediction itself takes about a millisecond
    with receive(receiver) as hook, httpx.Client(base_url=server, headers=auth()) as c:
        c.post(CREATE, json={"input": {"image": png_data_url()}, "webhook": f"{hook}/hook"})
        assert receiver.completed.wait(30)
    assert [payload["status"] for _, payload in receiver.events] == ["processing", "succeeded"]


def test_the_filter_keeps_only_the_events_asked_for(server: str) -> None:
    receiver = Receiver()
    with receive(receiver) as hook, httpx.Client(base_url=server, headers=auth()) as c:
        c.post(
            CREATE,
            json={
                "input": {"image": png_data_url()},
                "webhook": f"{hook}/hook",
                "webhook_events_filter": ["completed"],
            },
        )
        assert receiver.completed.wait(30)
    assert [p["status"] for _, p in receiver.events] == ["succeeded"]


def test_the_final_event_is_retried_with_the_same_id_until_the_receiver_takes_it(server: str) -> None:
    receiver = Receiver(refuse_first=3)
    with receive(receiver) as hook, httpx.Client(base_url=server, headers=auth()) as c:
        c.post(
            CREATE,
            json={
                "input": {"image": png_data_url()},
                "webhook": f"{hook}/hook",
                "webhook_events_filter": ["completed"],
            },
        )
        assert receiver.completed.wait(30)
    assert receiver.attempts == 4
    assert len(receiver.events) == 1 and receiver.events[0][0].endswith("-completed")


@pytest.mark.parametrize(
    ("webhook", "events", "detail"),
    [
        ("http://169.254.169.254/latest/meta-data", None, "not on this server's allow-list"),
        ("ftp://127.0.0.1/x", None, "must be an http(s) URL"),
        ("http://127.0.0.1:9/hook", ["finished"], "webhook_events_filter"),
    ],
)
def test_bad_webhooks_are_refused_before_anything_runs(
    server: str, webhook: str, events: list | None, detail: str
) -> None:
    body = {"input": {"image": png_data_url()}, "webhook": webhook}
    if events is not None:
        body["webhook_events_filter"] = events
    r = httpx.post(server + CREATE, json=body, headers=auth())
    assert r.status_code == 422 and detail in r.json()["detail"]


def test_without_a_signing_secret_the_server_refuses_webhooks() -> None:
    with inference_server(FIXTURES / "models") as url:
        r = httpx.post(
            url + CREATE,
            headers=auth(),
            json={"input": {"image": png_data_url()}, "webhook": "http://127.0.0.1:9/hook"},
        )
    assert r.status_code == 422 and "signing secret" in r.json()["detail"]
    assert json.dumps(r.json()).count("whsec_") == 0
