"""The official Replicate JavaScript client (npm `replicate`, pinned in tests/stack/js, installed by
`./dev test` with `npm ci`), run under Node against the proxy with a key, as an anonymous visitor,
and against the inference server with its token: what a customer's script receives."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.support.inference import OWNER
from tests.support.paths import DIGITS, TESTS
from tests.support.stack import Stack, Target, targets

JS = TESTS / "stack" / "js"
IMAGE = min(DIGITS.glob("*.png"))
LABEL = IMAGE.stem.rsplit("-", 1)[1]
NOT_OFFERED = ["trainings_list", "deployments_list", "hardware_list", "collections_list", "models_create"]


def node() -> str:
    found = shutil.which("node")
    if found is None or not (JS / "node_modules" / "replicate").is_dir():
        pytest.fail("Node 20 and the pinned client are needed: ./dev test installs both (apt, npm ci)")
    major = int(subprocess.run([found, "--version"], capture_output=True, text=True, check=True).stdout[1:3])
    assert major >= 20, "the client suite runs under Node 20 or later"
    return found


def run_calls(target: Target, **env: str) -> dict[str, Any]:
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "BASE_URL": target.url,
        "OWNER": OWNER,
        "IMAGE_PATH": str(IMAGE),
        **({"TOKEN": target.token} if target.token else {}),
        **env,
    }
    done = subprocess.run(
        [node(), "calls.mjs"],
        cwd=JS,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


@pytest.fixture(scope="module", params=["proxy", "anonymous", "inference"])
def js(
    request: pytest.FixtureRequest, stack: Stack, customer: str, other_customer: str
) -> tuple[Target, dict]:
    target = targets(stack, customer)[request.param]
    # Someone else's prediction, made first: a customer's list must not show it.
    theirs = httpx.post(
        f"{stack.url}/v1/models/{OWNER}/digits/predictions",
        json={"input": {"image": f"data:image/png;base64,{base64.b64encode(IMAGE.read_bytes()).decode()}"}},
        headers={"Authorization": f"Bearer {other_customer}", "Prefer": "wait"},
        timeout=60,
    ).json()
    results = run_calls(target)
    results["theirs"] = theirs["id"]
    return target, results


def value(results: dict[str, Any], name: str) -> Any:
    assert results[name]["ok"], f"{name}: {results[name]}"
    return results[name]["value"]


def refused(results: dict[str, Any], name: str) -> int:
    assert not results[name]["ok"], f"{name} should have been refused: {results[name]}"
    return int(results[name]["status"])


def test_models_get_gives_the_fields_the_client_reads(js: tuple[Target, dict], stack: Stack) -> None:
    target, results = js
    model = value(results, "models_get")
    assert (model["owner"], model["name"]) == (OWNER, "digits")
    assert isinstance(model["run_count"], int) and model["run_count"] >= 1
    assert datetime.fromisoformat(model["latest_version_created_at"]).tzinfo is not None
    example = model["default_example"]
    assert example["status"] == "succeeded" and example["output"]["label"] == "3"
    if target.proxy:
        assert model["cover_image_url"].startswith(f"{stack.url}/models/digits/")
        assert httpx.get(model["cover_image_url"]).headers["content-type"].startswith("image/")
    else:
        assert model["cover_image_url"] is None


def test_models_and_versions_are_listed_and_found(js: tuple[Target, dict]) -> None:
    _, results = js
    pages = value(results, "models_list")
    assert len(pages) == 1 and sorted(pages[0]) == ["defects", "digits"]
    version = value(results, "models_get")["latest_version_id"]
    assert version in [v["id"] for v in value(results, "versions_list")]
    assert value(results, "versions_get") == version
    assert refused(results, "versions_get_unknown") == 404


def test_predictions_are_created_waited_for_read_and_canceled(js: tuple[Target, dict]) -> None:
    _, results = js
    made = value(results, "create_by_model_wait")
    assert made["status"] == "succeeded" and made["output"]["label"] == LABEL
    assert made["model"] == f"{OWNER}/digits"
    assert datetime.fromisoformat(made["created_at"]).tzinfo is not None
    both = value(results, "create_by_version_then_wait")
    assert both["done"]["status"] == "succeeded" and both["done"]["output"]["label"] == LABEL
    assert value(results, "predictions_get")["id"] == made["id"]
    assert value(results, "predictions_cancel")["status"] == "succeeded"  # it had finished: unchanged
    assert refused(results, "predictions_get_unknown") == 404


def test_a_caller_lists_its_own_predictions_newest_first(js: tuple[Target, dict]) -> None:
    target, results = js
    if target.anonymous:
        assert refused(results, "predictions_list") == 401
        assert "API key" in results["predictions_list"]["message"]
        return
    listed = value(results, "predictions_list")
    first, second = (
        value(results, "create_by_model_wait")["id"],
        value(results, "create_by_version_then_wait"),
    )
    assert listed["ids"][:2] == [second["created"]["id"], first]
    assert listed["previous"] is None
    paginated = value(results, "predictions_paginate")
    assert paginated[:2] == listed["ids"][:2] and len(paginated) == len(set(paginated))
    if target.proxy:
        assert results["theirs"] not in paginated  # another customer's
    else:
        assert results["theirs"] in paginated  # the model server's token sees everything


def test_files_are_uploaded_with_their_metadata_then_deleted(js: tuple[Target, dict]) -> None:
    target, results = js
    if target.anonymous:
        assert refused(results, "files_create") == 401
        return
    file = value(results, "files_create")
    assert file["size"] == IMAGE.stat().st_size
    assert file["sha256"] == hashlib.sha256(IMAGE.read_bytes()).hexdigest()
    assert file["metadata"] == {"purpose": "test"}  # sent as a second multipart file part
    assert file["get"].startswith(target.url)
    assert value(results, "files_get") == file["id"]
    assert file["id"] in value(results, "files_list")
    assert value(results, "files_delete") is True
    assert refused(results, "files_get_deleted") == 404


def test_run_returns_the_models_output(js: tuple[Target, dict]) -> None:
    target, results = js
    assert value(results, "run_with_version")["label"] == LABEL
    assert value(results, "run_data_url")["label"] == LABEL
    if target.anonymous:
        assert refused(results, "run_with_buffer") == 401  # uploads need a key; data URIs do not
    else:
        assert value(results, "run_with_buffer")["label"] == LABEL


def test_calls_that_do_not_apply_name_what_is_not_offered(js: tuple[Target, dict]) -> None:
    _, results = js
    for name in NOT_OFFERED:
        assert refused(results, name) == 501, name
        assert "not offered" in results[name]["message"], name
    assert "does not support streaming" in results["stream"]["message"]


@pytest.mark.parametrize("which", ["proxy", "anonymous", "inference"])
def test_a_file_output_comes_back_as_a_file_the_client_reads(
    which: str, file_output_targets: dict[str, Target]
) -> None:
    results = run_calls(file_output_targets[which], MODE="file-output")
    output = value(results, "run_file_output")
    assert output["kind"] == "FileOutput" and output["url_scheme"] == "data:"
    png = bytes(output["bytes"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    source = IMAGE.read_bytes()
    assert (width, height) == (
        2 * int.from_bytes(source[16:20], "big"),
        2 * int.from_bytes(source[20:24], "big"),
    )
