"""The modelfolio edge proxy: serves the portfolio, authenticates and meters the API, and holds
the secrets the inference server and Stripe need."""

from __future__ import annotations

from proxy.app import create_app
from proxy.config import Config, RateLimit, Route, Secrets, load_config
from proxy.errors import ConfigError, ProxyError, RequestError

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
