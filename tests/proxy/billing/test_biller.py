"""The first sight of a succeeded prediction bills it, or hands nothing out: a result whose price
cannot be read is answered 503 (with Retry-After) to whoever asks, the poller and the model
server's signed completion event alike, until a price is there and it is billed, once."""

from __future__ import annotations

import base64
import datetime
import json
import re
import secrets
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from proxy import Secrets
from tests.support.inference import TOKEN
from tests.support.proxy import FakeInference, ledger_rows, predict, proxy_in_front_of

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def completion_event(client: httpx.Client, prediction: dict) -> httpx.Response:
    """The model server's signed `completed` event (Standard Webhooks), as it sends it."""
    body = json.dumps(prediction)
    moment = datetime.datetime.now(datetime.UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": f"{prediction['id']}-completed",
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(f"{prediction['id']}-completed", moment, body),
    }
    return client.post("/internal/inference-events", content=body, headers=headers)


def test_a_result_whose_price_cannot_be_read_is_not_handed_out_until_it_is_billed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeInference(price=None)  # the model server answers without a price (a cold start)
    caplog.set_level("INFO", logger="modelfolio.proxy")
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        first = predict(client)
        (prediction_id,) = re.findall(r"prediction (\S+) has finished", first.json()["detail"])
        polled = client.get(f"/v1/predictions/{prediction_id}")
        fake.price = "0.001"
        later = client.get(f"/v1/predictions/{prediction_id}")
    for refused in (first, polled):
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert "output" not in refused.json() and "label" not in refused.text
    assert "billing_deferred" in caplog.text
    assert later.status_code == 200 and later.json()["output"] == {"label": "7", "confidence": 0.98}
    assert later.json()["billing"]["amount"] == "0.000013"  # 13 ms at $0.001/s
    assert len(ledger_rows(tmp_path, "billed_usage")) == 1


def test_the_model_servers_completion_event_is_refused_until_the_prediction_can_be_billed(
    tmp_path: Path,
) -> None:
    fake = FakeInference(price=None)
    secrets_ = Secrets(inference_token=TOKEN, inference_webhook_secret=SECRET)
    with proxy_in_front_of(fake.app(), tmp_path, secrets=secrets_) as client:
        created = predict(client, wait=False).json()  # nobody polls it again
        done = {
            **created,
            "status": "succeeded",
            "output": {"label": "7"},
            "metrics": {"predict_time": 0.0125},
        }
        refused = completion_event(client, done)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"  # so it retries
        assert ledger_rows(tmp_path, "billed_usage") == []
        fake.price = "0.001"
        assert completion_event(client, done).status_code == 204
        assert completion_event(client, done).status_code == 204  # a retry bills nothing more
    (row,) = ledger_rows(tmp_path, "billed_usage")
    assert row[0] == created["id"]
