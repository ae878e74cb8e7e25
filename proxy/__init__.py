"""The modelfolio edge proxy: serves the portfolio, authenticates and meters the API, and holds
the secrets the inference server and Stripe need.

The app (Starlette, the Stripe SDK) is imported only when `create_app` is first used, so that
`import proxy.config` or a billing command does not load the web stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy.config import Config, RateLimit, Route, Secrets, load_config
from proxy.errors import ConfigError, ProxyError, RequestError

if TYPE_CHECKING:
    from proxy.app import create_app

__all__ = [
    "Config",
    "ConfigError",
    "ProxyError",
    "RateLimit",
    "RequestError",
    "Route",
    "Secrets",
    "create_app",
    "load_config",
]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from proxy.app import create_app

        return create_app
    raise AttributeError(f"module 'proxy' has no attribute {name!r}")
