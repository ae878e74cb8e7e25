"""What the official clients' suites share: customers' keys on the stack, each target a client
points at, and a second stack whose model answers with a file."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.app import create_app as create_proxy
from tests.support.inference import TOKEN, inference_server
from tests.support.paths import FIXTURES
from tests.support.proxy import issue_key
from tests.support.servers import serve
from tests.support.stack import Stack, Target, targets


@pytest.fixture(scope="session")
def customer(stack: Stack) -> str:
    return issue_key(stack.ledger.parent, "cus_clientsuite")


@pytest.fixture(scope="session")
def other_customer(stack: Stack) -> str:
    return issue_key(stack.ledger.parent, "cus_clientsuiteother")


@pytest.fixture(params=["proxy", "anonymous", "inference"])
def target(request: pytest.FixtureRequest, stack: Stack, customer: str) -> Target:
    return targets(stack, customer)[request.param]


@pytest.fixture(scope="session")
def file_output_targets(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Target]]:
    """An inference server with Cog's upscale example (its output is a file) and a proxy."""
    tmp = tmp_path_factory.mktemp("files")
    with contextlib.ExitStack() as servers:
        upstream = servers.enter_context(inference_server(FIXTURES / "cog_models"))
        config = dataclasses.replace(
            stack.config, upstream_url=upstream, ledger_path=tmp / "ledger.sqlite3", site_dir=Path(tmp)
        )
        proxy = servers.enter_context(serve(create_proxy(config)))
        key = issue_key(tmp, "cus_fileoutput")
        yield {
            "proxy": Target("proxy", proxy, key),
            "anonymous": Target("anonymous", proxy, None),
            "inference": Target("inference", upstream, TOKEN),
        }
