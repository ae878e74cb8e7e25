"""Checks for single configuration values: each returns the value in its type, or raises a
ConfigError that names the setting (`name`, e.g. "wrangler.toml [vars] OWNER") and what it got."""

from __future__ import annotations

import contextlib
import datetime
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def string(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
    return value.strip()


def owner(value: Any, name: str) -> str:
    owner = string(value, name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", owner):
        raise ConfigError(f"{name} must be a handle like 'modelfolio' (letters, digits, - _ .)")
    return owner


def origin(value: Any, name: str) -> str:
    url = string(value, name).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
        raise ConfigError(f"{name} must be an origin like 'https://example.com', got {url!r}")
    return url


def http_url(value: Any, name: str) -> str:
    url = string(value, name).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http(s) URL, got {url!r}")
    return url


def origins(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [item for item in value.split(",") if item.strip()]
    if not isinstance(value, list):
        raise ConfigError(f"{name} must be a list of origins, got {value!r}")
    return tuple(origin(item, name) for item in value)


def model_names(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or not all(
        isinstance(item, str) and re.fullmatch(r"[a-z0-9][a-z0-9._-]*", item) for item in value
    ):
        raise ConfigError(f"{name} must be a list of model names like ['digits'], got {value!r}")
    return tuple(value)


def author(value: Any, name: str) -> str:
    handle = string(value, name)
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,38}", handle):
        raise ConfigError(f"{name} must be an author handle like 'ada' (a-z, 0-9, - _), got {handle!r}")
    return handle


def path(value: Any, name: str) -> Path:
    return Path(string(value, name))


def integer(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


def positive_int(value: Any, name: str) -> int:
    return integer(value, name, 1)


def count(value: Any, name: str) -> int:
    return integer(value, name, 0)


def seconds(value: Any, name: str) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 86400:
        raise ConfigError(f"{name} must be a number of seconds above 0, got {value!r}")
    return float(value)


def resend_window(value: Any, name: str) -> float:
    """Seconds, at most 23 hours: Stripe keeps a meter event's identifier only about 24."""
    found = seconds(value, name)
    if found > 23 * 3600:
        raise ConfigError(f"{name} must be at most 23 hours (82800): Stripe keeps identifiers only about 24")
    return found


def boolean(value: Any, name: str) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def stripe_url(value: Any, name: str) -> str:
    url = http_url(value, name)
    # The secret key travels in the Authorization header: plain HTTP only to this machine.
    if urlsplit(url).scheme != "https" and urlsplit(url).hostname not in LOOPBACK:
        raise ConfigError(f"{name} must be https (plain http only for 127.0.0.1), got {url!r}")
    return url


def date(value: Any, name: str) -> str:
    if isinstance(value, datetime.date):  # TOML has a native date type
        return value.isoformat()
    if value == "":
        return ""
    try:
        return datetime.date.fromisoformat(string(value, name)).isoformat()
    except ValueError:
        raise ConfigError(f"{name} must be a date like 2025-01-01, got {value!r}") from None


def database_url(value: Any, name: str) -> str:
    url = string(value, name)
    if not url.startswith(("postgresql://", "postgres://", "sqlite:///")):
        raise ConfigError(
            f"{name} must be a postgresql://... or sqlite:///... URL, got {url.split(':', 1)[0]}:..."
        )
    return url


def redis_url(value: Any, name: str) -> str:
    url = string(value, name)
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"{name} must be a redis://, rediss:// or unix:// URL, got {url.split(':', 1)[0]}:..."
        )
    return url


def fraction(value: Any, name: str) -> Any:
    """A share from 0 to 1 as a Decimal, written as a string ("0.1") so that no float enters money."""
    from decimal import Decimal, InvalidOperation

    try:
        share = Decimal(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    except InvalidOperation:
        share = None
    if share is None or not 0 <= share <= 1:
        raise ConfigError(f'{name} must be a decimal string from "0" to "1", got {value!r}')
    return share
