"""Schemathesis over both published documents, against the running servers: the proxy's
`/openapi.json` (with a customer's key) and the inference server's (with its token). Every
generated request, valid or not, must get an answer the document describes, never a server
error, and never one that carries the inference token. Then a stateful run follows the
documents' links at random, and each link is followed once on purpose as well: an upload -> a
prediction that takes it -> get it, and cancel it.

Sized for CI (a few examples per operation). A longer run is one command:
    MODELFOLIO_FUZZ_EXAMPLES=300 ./dev test -k fuzz
"""

from __future__ import annotations

import contextlib
import os
import zlib
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET
from schemathesis.generation.stateful.state_machine import StepOutput
from schemathesis.openapi.loaders import from_url
from schemathesis.specs.openapi.expressions import evaluate

from tests.support.inference import OWNER, TOKEN, data_url
from tests.support.paths import DIGITS
from tests.support.proxy import issue_key
from tests.support.stack import Stack

PICTURE = min(DIGITS.glob("*.png")).read_bytes()
PICTURE_URL = data_url(PICTURE, "image/png")
EXAMPLES = int(os.environ.get("MODELFOLIO_FUZZ_EXAMPLES", "12"))


@schemathesis.check
def no_inference_token(ctx: Any, response: Any, case: Any) -> bool | None:
    """The model server's token is the one secret that would let anyone past the proxy."""
    seen = [response.content or b"", *(str(v).encode() for v in response.headers.values())]
    if any(TOKEN.encode() in part for part in seen):
        raise AssertionError(f"the inference token is in the answer to {case.method} {case.path}")
    return None


def config(headers: dict[str, str]) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "headers": headers,
            "suppress-health-check": ["all"],
            "generation": {"mode": "all", "max-examples": EXAMPLES, "database": "none"},
            "checks": {
                # 501 is this API's deliberate answer to what it does not offer (`"stream": true`).
                "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "501"]},
                "positive_data_acceptance": {"enabled": False},  # a valid string is not an image
                "negative_data_rejection": {"enabled": False},  # extra keys are ignored, as Replicate does
                "missing_required_header": {"enabled": False},
                "unsupported_method": {"enabled": False},
                "ignored_auth": {"enabled": False},
                "use_after_free": {"enabled": False},  # a deleted file's predictions stay readable
                "ensure_resource_availability": {"enabled": False},
            },
        }
    )


@pytest.fixture(scope="module")
def fuzz_key(stack: Stack) -> str:
    return issue_key(stack.ledger.parent, "cus_fuzz")


@pytest.fixture(scope="module")
def proxy_schema(stack: Stack, fuzz_key: str) -> schemathesis.BaseSchema:
    schema = from_url(f"{stack.url}/openapi.json", config=config({"Authorization": f"Bearer {fuzz_key}"}))
    # A spend cap or a rotation changes the fuzzing caller's own account mid-run (a cap of 0.00
    # would 402 every create after it); they have their own tests in tests/proxy/billing/.
    return schema.exclude(path_regex="^/v1/(usage/cap|keys/rotate)$")


@pytest.fixture(scope="module")
def inference_schema(stack: Stack) -> schemathesis.BaseSchema:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    schema = from_url(f"{stack.upstream}/openapi.json", config=config(auth), headers=auth)
    # Reloading and promoting change what the shared server serves mid-run; they have their own tests.
    return schema.exclude(path_regex="^/v1/admin/")


def guide(case: schemathesis.Case) -> None:
    """Half the creates and every upload get a real picture, so that a chain can go on past its
    first step: random bytes are never an image, and a link only follows a success."""
    if not isinstance(case.body, dict) or case.method != "POST":
        return
    if case.path == "/v1/files":
        case.body.update(content=PICTURE, metadata="{}")
        return
    if not case.path.endswith("/predictions"):
        return
    given = case.body.get("input")
    uploaded = {k: v for k, v in given.items() if "/v1/files/" in str(v)} if isinstance(given, dict) else {}
    if uploaded:
        case.body["input"] = {"image": next(iter(uploaded.values()))}
    elif zlib.crc32(repr(sorted(case.body.items())).encode()) % 2:
        return  # left as generated (decided by what was drawn, so a replay decides the same)
    else:
        case.body["input"] = {"image": PICTURE_URL}
    case.body.pop("stream", None)
    case.body.pop("webhook", None)
    for header in ("Prefer", "Cancel-After"):
        (case.headers or {}).pop(header, None)
    if "version" in case.body:
        case.body["version"] = f"{OWNER}/digits"
    if case.path_parameters and "owner" in case.path_parameters:
        case.path_parameters.update(owner=OWNER, name="digits")


def _settings() -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],  # report, do not shrink
    )


@pytest.mark.parametrize("which", ["proxy_schema", "inference_schema"])
def test_every_operation_answers_as_its_document_says(which: str, request: pytest.FixtureRequest) -> None:
    schema: schemathesis.BaseSchema = request.getfixturevalue(which)
    failures: list[str] = []
    calls: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @_settings()
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def answers_as_documented(case: schemathesis.Case) -> None:
                calls.append(case.operation.label)
                case.call_and_validate(additional_checks=[no_inference_token])

            try:
                answers_as_documented()
            except hypothesis.errors.Unsatisfiable:
                continue  # nothing in this operation can be made invalid (a string path parameter)
            except Exception as failure:
                failures.append(f"{operation.label} ({mode.value}): {failure}")
    assert not failures, "\n\n".join(failures)
    print(f"{which}: {len(calls)} requests over {len(set(calls))} operations")


def _stateful_settings() -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=2 * EXAMPLES,
        stateful_step_count=10,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )


def follow(case: schemathesis.Case, answer: Any, link: str) -> tuple[schemathesis.Case, Any]:
    """The call that the document's link `link` makes of `case`'s answer, made and checked."""
    output = StepOutput(response=answer, case=case)
    definition = case.operation.definition.raw["responses"][str(answer.status_code)]["links"][link]
    target = case.operation.schema.find_operation_by_id(definition["operationId"])
    followed = target.Case(
        path_parameters={
            name.removeprefix("path."): evaluate(value, output)
            for name, value in definition.get("parameters", {}).items()
        },
        body=evaluate(definition["requestBody"], output, evaluate_nested=True)
        if "requestBody" in definition
        else NOT_SET,
    )
    return followed, call(followed)


def call(case: schemathesis.Case) -> Any:
    """`case` made, with the caller's credentials (as the generated calls get them), and checked."""
    headers = case.operation.schema.config.headers_for(operation=case.operation)
    return case.call_and_validate(headers=headers, additional_checks=[no_inference_token])


@pytest.mark.parametrize("which", ["proxy_schema", "inference_schema"])
def test_linked_calls_create_get_cancel_and_upload_then_predict(
    which: str, request: pytest.FixtureRequest
) -> None:
    schema: schemathesis.BaseSchema = request.getfixturevalue(which)
    answered: list[str] = []

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: schemathesis.Case) -> None:
            super().before_call(case)
            guide(case)

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            kwargs["additional_checks"] = [*(kwargs.get("additional_checks") or []), no_inference_token]
            super().validate_response(response, case, **kwargs)

        def after_call(self, response: Any, case: schemathesis.Case) -> None:
            super().after_call(response, case)
            answered.append(case.operation.label)

    with contextlib.suppress(hypothesis.errors.FlakyStrategyDefinition):
        # (A replay that found the server in another state is no finding; every request made was
        # checked all the same.)
        Workflow.run(settings=_stateful_settings())

    # The random run walks a link only when it happens to draw it: on one CI machine, ten runs in
    # a row drew no prediction from an upload. So every link is also followed once on purpose:
    # upload -> a prediction that takes the file -> get it, and cancel it.
    upload = schema["/v1/files"]["POST"].Case(body={"content": PICTURE, "metadata": "{}"})
    uploaded = call(upload)
    assert uploaded.status_code == 201, uploaded.text
    create, created = follow(upload, uploaded, "PredictWithFile")
    assert created.status_code == 201, created.text
    assert created.json()["input"] == create.body["input"]
    for link in ("GetPrediction", "CancelPrediction"):
        _, found = follow(create, created, link)
        assert found.status_code == 200 and found.json()["id"] == created.json()["id"], found.text
    print(f"{which}: {len(answered)} linked-run requests over {len(set(answered))} operations")
