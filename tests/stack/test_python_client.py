"""The official `replicate` Python client (1.0.7, pinned), pointed at the proxy with a customer's
key, at the proxy as an anonymous visitor, and at the inference server with its token: every
call that applies, and what the caller gets back (values, types, whose predictions)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import replicate
from replicate.exceptions import ReplicateError
from replicate.helpers import FileOutput

from tests.support.inference import OWNER, data_url
from tests.support.paths import DIGITS, MODELS_DIR, REPO
from tests.support.stack import Stack, Target

IMAGE = min(DIGITS.glob("*.png"))
LABEL = IMAGE.stem.rsplit("-", 1)[1]
DIGITS_MODEL = f"{OWNER}/digits"


@contextlib.contextmanager
def client_for(target: Target) -> Iterator[replicate.Client]:
    client = replicate.Client(api_token=target.token, base_url=target.url)
    try:
        yield client
    finally:
        client._client.close()  # the client offers no close() of its own


@pytest.fixture
def client(target: Target, monkeypatch: pytest.MonkeyPatch) -> Iterator[replicate.Client]:
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)  # anonymous means no token at all
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.05")
    with client_for(target) as made:
        yield made


def status_of(call: object) -> int:
    with pytest.raises(ReplicateError) as refused:
        call()  # type: ignore[operator]
    assert refused.value.detail, "an error names its problem"
    return int(refused.value.status or 0)


def test_models_get_then_latest_version_then_create_by_version(
    client: replicate.Client, target: Target, stack: Stack
) -> None:
    model = client.models.get(DIGITS_MODEL)
    version = model.latest_version
    assert version is not None and isinstance(version.created_at, datetime.datetime)
    assert version.created_at.tzinfo is not None
    assert version.openapi_schema["components"]["schemas"]["Input"]["required"] == ["image"]
    by_object = client.predictions.create(
        version=version, input={"image": data_url(IMAGE.read_bytes(), "image/png")}
    )
    by_id = client.predictions.create(
        version=version.id, input={"image": data_url(IMAGE.read_bytes(), "image/png")}
    )
    by_model = client.models.predictions.create(
        model=model, input={"image": data_url(IMAGE.read_bytes(), "image/png")}
    )
    for prediction in (by_object, by_id, by_model):
        prediction.wait()
        assert (prediction.status, prediction.output["label"]) == ("succeeded", LABEL)
        assert prediction.version == version.id and prediction.model == DIGITS_MODEL
        assert prediction.urls["get"] == f"{target.url}/v1/predictions/{prediction.id}"
    model.reload()
    assert model.run_count >= 3


def test_run_count_counts_each_real_prediction(client: replicate.Client) -> None:
    before = client.models.get(DIGITS_MODEL).run_count
    client.run(DIGITS_MODEL, input={"image": data_url(IMAGE.read_bytes(), "image/png")})
    assert client.models.get(DIGITS_MODEL).run_count == before + 1


def test_the_model_shows_a_cover_picture_and_a_real_default_example(
    client: replicate.Client, target: Target, stack: Stack
) -> None:
    model = client.models.get(DIGITS_MODEL)
    example = model.default_example
    assert example is not None and example.status == "succeeded"
    assert example.output["label"] == "3"  # the manifest's first example, really run
    shipped = (MODELS_DIR / "digits" / "examples" / "digit-3.png").read_bytes()
    assert base64.b64decode(example.input["image"].split(",", 1)[1]) == shipped
    # The example's input runs as it is.
    assert client.run(DIGITS_MODEL, input=example.input)["label"] == "3"
    if target.proxy:
        assert model.cover_image_url is not None and model.cover_image_url.startswith(
            f"{stack.url}/models/digits/"
        )
        picture = httpx.get(model.cover_image_url)
        assert picture.status_code == 200 and picture.headers["content-type"].startswith("image/")
    else:
        assert model.cover_image_url is None  # the site's pictures are the proxy's


def test_models_and_versions_list(client: replicate.Client, target: Target) -> None:
    pages = list(replicate.paginate(client.models.list))
    assert len(pages) == 1 and {m.name for m in pages[0]} == {"digits", "defects"}
    one = client.models.list(f"{target.url}/v1/models?limit=1")
    assert one.next is not None and one.previous is None
    other = client.models.list(one.next)
    assert {m.name for m in [*one, *other]} == {"digits", "defects"} and other.next is None
    assert all(isinstance(m.run_count, int) and m.latest_version is not None for m in pages[0])
    model = client.models.get(DIGITS_MODEL)
    versions = model.versions.list()
    assert model.latest_version is not None
    assert [v.id for v in versions] == [model.latest_version.id]
    assert model.versions.get(model.latest_version.id).id == model.latest_version.id
    assert status_of(lambda: model.versions.get("nosuchversion")) == 404


def test_wait_reload_get_and_cancel(client: replicate.Client) -> None:
    prediction = client.models.predictions.create(
        model=DIGITS_MODEL, input={"image": data_url(IMAGE.read_bytes(), "image/png")}
    )
    assert prediction.status in ("starting", "processing", "succeeded")
    prediction.wait()
    assert prediction.status == "succeeded"
    prediction.reload()
    fetched = client.predictions.get(prediction.id)
    assert (fetched.id, fetched.status, fetched.output) == (prediction.id, "succeeded", prediction.output)
    assert datetime.datetime.fromisoformat(fetched.completed_at or "") >= datetime.datetime.fromisoformat(
        fetched.created_at or ""
    )
    prediction.cancel()  # it has finished: cancel changes nothing, and says so
    assert prediction.status == "succeeded"
    assert status_of(lambda: client.predictions.get("nosuchpredictionatall")) == 404


def test_a_caller_lists_only_its_own_predictions_newest_first(
    client: replicate.Client, target: Target, stack: Stack, other_customer: str
) -> None:
    with client_for(Target("other", stack.url, other_customer)) as other:
        theirs = other.run(
            DIGITS_MODEL, input={"image": data_url(IMAGE.read_bytes(), "image/png")}, wait=True
        )
        del theirs
        their_id = other.predictions.list().results[0].id
    made = [
        client.predictions.create(
            version=client.models.get(DIGITS_MODEL).latest_version, input={"image": image}
        )
        for image in [data_url(p.read_bytes(), "image/png") for p in sorted(DIGITS.glob("*.png"))[:3]]
    ]
    if target.anonymous:
        assert status_of(client.predictions.list) == 401
        return
    page = client.predictions.list()
    assert [p.id for p in page.results[:3]] == [p.id for p in reversed(made)]
    assert all(isinstance(p.created_at, str) for p in page.results)
    # One at a time, following the next URLs the API gives, then back with previous.
    first = client.predictions.list(f"{target.url}/v1/predictions?limit=1")
    assert [p.id for p in first] == [made[-1].id] and first.previous is None and first.next
    second = client.predictions.list(first.next)
    assert [p.id for p in second] == [made[-2].id]
    assert second.previous is not None
    assert [p.id for p in client.predictions.list(second.previous)] == [made[-1].id]
    everything = [p.id for page in replicate.paginate(client.predictions.list) for p in page]
    assert {p.id for p in made} <= set(everything)
    if target.proxy:
        assert their_id not in everything
        assert status_of(lambda: client.predictions.get(their_id)) == 404
        assert status_of(lambda: client.predictions.cancel(their_id)) == 404


def test_files_create_get_list_delete(client: replicate.Client, target: Target) -> None:
    png = IMAGE.read_bytes()
    if target.anonymous:
        assert status_of(lambda: client.files.create(io.BytesIO(png), filename="digit.png")) == 401
        return
    file = client.files.create(io.BytesIO(png), filename="digit.png", metadata={"purpose": "a test"})
    assert (file.name, file.size, file.content_type) == ("digit.png", len(png), "image/png")
    assert file.checksums["sha256"] == hashlib.sha256(png).hexdigest()
    assert file.metadata == {"purpose": "a test"}
    assert file.urls["get"] == f"{target.url}/v1/files/{file.id}"
    assert client.files.get(file.id).size == len(png)
    assert file.id in [f.id for f in client.files.list()]
    # An upload's URL is an input.
    prediction = client.models.predictions.create(
        model=DIGITS_MODEL, input={"image": file.urls["get"]}, wait=True
    )
    assert prediction.output["label"] == LABEL
    assert client.files.delete(file.id) is True
    assert status_of(lambda: client.files.get(file.id)) == 404
    assert file.id not in [f.id for f in client.files.list()]


def test_run_and_async_run(client: replicate.Client, target: Target) -> None:
    version = client.models.get(DIGITS_MODEL).latest_version
    assert version is not None
    inline = {"image": data_url(IMAGE.read_bytes(), "image/png")}
    assert client.run(f"{DIGITS_MODEL}:{version.id}", input=inline)["label"] == LABEL
    with IMAGE.open("rb") as picture:
        if target.anonymous:  # the client uploads a file first; visitors send data URLs
            assert status_of(lambda: client.run(DIGITS_MODEL, input={"image": picture})) == 401
            picture.seek(0)
            output = client.run(DIGITS_MODEL, input={"image": picture}, file_encoding_strategy="base64")
        else:
            output = client.run(DIGITS_MODEL, input={"image": picture})
    assert output["label"] == LABEL

    async def run_async() -> tuple[object, object]:
        try:
            by_name = await client.async_run(DIGITS_MODEL, input=inline)
            by_version = await client.async_run(version, input=inline)
            return by_name, by_version
        finally:
            await client._async_client.aclose()

    by_name, by_version = asyncio.run(run_async())
    assert by_name["label"] == by_version["label"] == LABEL  # type: ignore[index]


@pytest.mark.parametrize("which", ["proxy", "anonymous", "inference"])
def test_a_file_output_is_a_file_the_client_reads(which: str, file_output_targets: dict[str, Target]) -> None:
    with client_for(file_output_targets[which]) as client:
        output = client.run(
            f"{OWNER}/upscale", input={"image": data_url(IMAGE.read_bytes(), "image/png"), "scale": 2}
        )
    assert isinstance(output, FileOutput)
    png = output.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    source = IMAGE.read_bytes()
    assert png[16:24] == b"".join(
        (2 * int.from_bytes(source[i : i + 4], "big")).to_bytes(4, "big") for i in (16, 20)
    )


def test_calls_that_do_not_apply_name_what_is_not_offered(client: replicate.Client) -> None:
    for call in (
        client.trainings.list,
        client.deployments.list,
        client.hardware.list,
        client.collections.list,
        lambda: client.models.create(OWNER, "new", visibility="public", hardware="cpu"),
        lambda: client.models.search("digits"),
        lambda: client.predictions.create(
            version=client.models.get(DIGITS_MODEL).latest_version,
            input={"image": data_url(IMAGE.read_bytes(), "image/png")},
            stream=True,
        ),
    ):
        with pytest.raises(ReplicateError) as refused:
            call()
        assert refused.value.status == 501 and "not offered" in (refused.value.detail or "")


def test_a_create_for_an_unknown_model_is_a_404_naming_it(target: Target) -> None:
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    answer = httpx.post(
        f"{target.url}/v1/models/{OWNER}/nosuchmodel/predictions",
        json={"input": {}},
        headers=headers,
        timeout=30,
    )
    assert answer.status_code == 404 and f"{OWNER}/nosuchmodel" in answer.json()["detail"]


def test_the_documented_script_runs_unchanged_against_the_stack(stack: Stack, customer: str) -> None:
    """docs/replicate_script.py uses only the client, configured by its two environment variables."""
    environment = {**os.environ, "REPLICATE_API_TOKEN": customer, "REPLICATE_BASE_URL": stack.url}
    done = subprocess.run(
        [sys.executable, str(REPO / "docs" / "replicate_script.py"), str(IMAGE)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"label: {LABEL}" in done.stdout
