"""Shared result links: a prediction opens for its creator only, unless the owner made its
model's results public; then anyone with the link may read it, and nothing is billed to them."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from proxy import ConfigError, load_config
from tests.support.proxy import IMAGE, FakeInference, ledger_rows, proxy_in_front_of

ALICE = {"X-Forwarded-For": "203.0.113.5"}  # two visitors, told apart by their address
BOB = {"X-Forwarded-For": "198.51.100.7"}


def create(client: httpx.Client, model: str = "digits") -> str:
    response = client.post(f"/v1/models/modelfolio/{model}/predictions", json={"input": IMAGE}, headers=ALICE)
    assert response.status_code == 201
    return str(response.json()["id"])


def test_by_default_a_result_link_opens_for_its_creator_only(tmp_path: Path) -> None:
    with proxy_in_front_of(FakeInference().app(), tmp_path, trust_x_forwarded_for=True) as client:
        prediction_id = create(client)
        theirs = client.get(f"/v1/predictions/{prediction_id}", headers=BOB)
        unknown = client.get("/v1/predictions/nosuchpred0", headers=BOB)
        mine = client.get(f"/v1/predictions/{prediction_id}", headers=ALICE)

    assert mine.status_code == 200 and mine.json()["output"]["label"] == "7"
    assert theirs.status_code == 404
    assert theirs.json() == unknown.json()  # someone else's looks like one that does not exist


def test_when_the_owner_makes_a_models_results_public_anyone_may_read_them_unbilled(tmp_path: Path) -> None:
    with proxy_in_front_of(
        FakeInference().app(), tmp_path, trust_x_forwarded_for=True, public_results=("digits",)
    ) as client:
        prediction_id = create(client)
        shared = client.get(f"/v1/predictions/{prediction_id}", headers=BOB)
        billed_before_the_creator_looked = ledger_rows(tmp_path, "billed_usage")
        canceled = client.post(f"/v1/predictions/{prediction_id}/cancel", headers=BOB)
        mine = client.get(f"/v1/predictions/{prediction_id}", headers=ALICE)

    assert shared.status_code == 200
    body = shared.json()
    assert body["output"]["label"] == "7" and "billing" not in body
    assert list(body["urls"]) == ["get"]  # no cancel: not theirs
    assert billed_before_the_creator_looked == []
    assert canceled.status_code == 404  # reading is all a stranger may do
    assert mine.json()["billing"]["billed_to"] == "demo"
    assert len(ledger_rows(tmp_path, "billed_usage")) == 1


def test_other_models_results_stay_private(tmp_path: Path) -> None:
    with proxy_in_front_of(
        FakeInference().app(), tmp_path, trust_x_forwarded_for=True, public_results=("digits",)
    ) as client:
        prediction_id = create(client, "cats")
        theirs = client.get(f"/v1/predictions/{prediction_id}", headers=BOB)

    assert theirs.status_code == 404


def test_the_owner_lists_public_models_in_wrangler_toml_or_the_environment() -> None:
    assert load_config(require_secrets=False).public_results == ()  # private by default
    listed = load_config(require_secrets=False, environ={"MODELFOLIO_PUBLIC_RESULTS": "digits, defects"})
    assert listed.public_results == ("digits", "defects")
    with pytest.raises(ConfigError, match=r"PUBLIC_RESULTS .* must be a list of model names"):
        load_config(require_secrets=False, environ={"MODELFOLIO_PUBLIC_RESULTS": "modelfolio/digits"})
