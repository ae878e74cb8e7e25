"""The whole product as a visitor meets it (see the `stack` fixture in tests/conftest.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from proxy.config import Config
from tests.support.inference import TOKEN


@dataclasses.dataclass(frozen=True)
class Stack:
    url: str  # the proxy: what a visitor opens
    upstream: str  # the inference server, with the shipped models
    config: Config
    dist: Path
    ledger: Path


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a client points, with which token (None: an anonymous visitor)."""

    name: str
    url: str
    token: str | None

    @property
    def proxy(self) -> bool:
        return self.name != "inference"

    @property
    def anonymous(self) -> bool:
        return self.token is None


def targets(stack: Stack, key: str) -> dict[str, Target]:
    return {
        "proxy": Target("proxy", stack.url, key),
        "anonymous": Target("anonymous", stack.url, None),
        "inference": Target("inference", stack.upstream, TOKEN),
    }
