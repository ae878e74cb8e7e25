"""The proxy's settings, read and checked once at start from `wrangler-like-config/`.

Where each value comes from, later wins:
  1. `wrangler.toml`, top level (`[vars]`, `[[routes]]`, `[[ratelimits]]`, ...);
  2. its `[env.NAME]` section, NAME from `env=` or `MODELFOLIO_ENV` (vars merged key by key,
     `routes` and `ratelimits` replaced whole);
  3. environment variables `MODELFOLIO_<VAR>` for any var, e.g. `MODELFOLIO_UPSTREAM_URL`,
     `MODELFOLIO_SITE_DIR`, `MODELFOLIO_LEDGER_PATH` (lists comma-separated);
  4. in code, `dataclasses.replace(config, upstream_url=..., ledger_path=...)`.
Secrets come from the environment first, then `.dev.vars` beside `wrangler.toml`.
Relative paths are resolved against the folder that holds the config folder (the repo root).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from proxy._dotvars import read_dotvars
from proxy.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "wrangler-like-config"
ENV_PREFIX = "MODELFOLIO_"
REQUIRED_SECRETS = ("INFERENCE_TOKEN",)
OPTIONAL_SECRETS = ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "INFERENCE_WEBHOOK_SECRET")

_TOP_KEYS = {"name", "main", "compatibility_date", "vars", "routes", "ratelimits", "billing", "env"}
_ENV_KEYS = {"name", "compatibility_date", "vars", "routes", "ratelimits", "billing"}


@dataclass(frozen=True)
class RateLimit:
    name: str
    limit: int
    period: int  # seconds
    applies_to: Literal["predictions", "requests"] = "predictions"


@dataclass(frozen=True)
class Route:
    pattern: str  # where the deployment sends traffic to this proxy; informational here


@dataclass(frozen=True)
class BillingConfig:
    """`[billing]`: where and how the metering worker talks to Stripe (the key is a secret)."""

    stripe_api_base: str = "https://api.stripe.com"
    stripe_meter_events_base: str = "https://meter-events.stripe.com"
    concurrency: int = 8  # calls in flight at once, over all (customer, meter) lanes
    timeout_s: float = 20.0
    poll_interval_s: float = 2.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 60.0
    # A backlog of more undelivered events than this goes through Stripe's v2 meter event stream
    # (100 events a call) instead of one v1 call per event.
    stream_above: int = 200


@dataclass(frozen=True)
class Secrets:
    inference_token: str | None = field(default=None, repr=False)
    stripe_secret_key: str | None = field(default=None, repr=False)
    stripe_webhook_secret: str | None = field(default=None, repr=False)
    inference_webhook_secret: str | None = field(default=None, repr=False)  # signs /internal/inference-events

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={'<set>' if getattr(self, f.name) else '<unset>'}" for f in dataclasses.fields(self)
        )
        return f"Secrets({shown})"

    __str__ = __repr__


@dataclass(frozen=True)
class Config:
    owner: str
    upstream_url: str
    public_origin: str
    allowed_origins: tuple[str, ...] = ()
    site_dir: Path = REPO_ROOT / "dist"
    ledger_path: Path = REPO_ROOT / "var" / "ledger.sqlite3"
    max_body_bytes: int = 10 * 1024 * 1024
    max_upload_bytes: int = 100 * 1024 * 1024  # POST /v1/files, for customers only
    demo_daily_quota: int = 50
    upstream_timeout_s: float = 70.0
    trust_x_forwarded_for: bool = False
    ratelimits: tuple[RateLimit, ...] = ()
    routes: tuple[Route, ...] = ()
    billing: BillingConfig = BillingConfig()
    secrets: Secrets = Secrets()
    name: str = "modelfolio-proxy"
    env: str | None = None
    compatibility_date: str = ""
    config_dir: Path = CONFIG_DIR

    def __post_init__(self) -> None:
        # So that `dataclasses.replace(config, site_dir="dist2")` means what load_config means.
        for name in ("site_dir", "ledger_path"):
            path = Path(getattr(self, name))
            if not path.is_absolute():
                path = (self.config_dir.parent / path).resolve()
            object.__setattr__(self, name, path)
        object.__setattr__(self, "upstream_url", self.upstream_url.rstrip("/"))
        object.__setattr__(self, "public_origin", self.public_origin.rstrip("/"))


def load_config(
    config_dir: Path = CONFIG_DIR,
    env: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    require_secrets: bool = True,
) -> Config:
    environ = os.environ if environ is None else environ
    env = env or environ.get(ENV_PREFIX + "ENV") or None
    config_dir = Path(config_dir).resolve()
    raw = _read_toml(config_dir / "wrangler.toml")
    merged, sources = _apply_env(raw, env)
    variables = _read_vars(merged.get("vars", {}), sources, environ)
    return Config(
        **variables,
        ratelimits=_read_ratelimits(merged.get("ratelimits", []), sources["ratelimits"]),
        routes=_read_routes(merged.get("routes", []), sources["routes"]),
        billing=_read_billing(merged.get("billing", {}), environ),
        secrets=_read_secrets(config_dir, environ, require_secrets),
        name=_string(merged.get("name", "modelfolio-proxy"), sources["name"]),
        env=env,
        compatibility_date=_date(merged.get("compatibility_date", ""), "compatibility_date"),
        config_dir=config_dir,
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no proxy configuration at {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    _reject_unknown(raw, _TOP_KEYS, "wrangler.toml")
    return raw


def _apply_env(raw: dict[str, Any], env: str | None) -> tuple[dict[str, Any], dict[str, str]]:
    merged = {key: value for key, value in raw.items() if key != "env"}
    sources = {key: key for key in ("name", "routes", "ratelimits")}
    sources.update({var: f"[vars] {var}" for var in raw.get("vars", {})})
    if env is None:
        return merged, sources
    envs = raw.get("env", {})
    if env not in envs:
        known = ", ".join(sorted(envs)) or "none"
        raise ConfigError(f"unknown environment {env!r} (MODELFOLIO_ENV or --env); known: {known}")
    section = envs[env]
    _reject_unknown(section, _ENV_KEYS, f"[env.{env}]")
    for key, value in section.items():
        if key == "billing" and isinstance(value, dict):
            merged["billing"] = {**merged.get("billing", {}), **value}
        elif key == "vars":
            merged["vars"] = {**merged.get("vars", {}), **value}
            sources.update({var: f"[env.{env}.vars] {var}" for var in value})
        else:
            merged[key] = value
            sources[key] = f"[env.{env}] {key}"
    return merged, sources


def _reject_unknown(table: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where}; known: {', '.join(sorted(known))}")


# --- vars ------------------------------------------------------------------------------------

_REQUIRED = object()


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
    return value.strip()


def _owner(value: Any, name: str) -> str:
    owner = _string(value, name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", owner):
        raise ConfigError(f"{name} must be a handle like 'modelfolio' (letters, digits, - _ .)")
    return owner


def _origin(value: Any, name: str) -> str:
    url = _string(value, name).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
        raise ConfigError(f"{name} must be an origin like 'https://example.com', got {url!r}")
    return url


def _http_url(value: Any, name: str) -> str:
    url = _string(value, name).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http(s) URL, got {url!r}")
    return url


def _origins(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [item for item in value.split(",") if item.strip()]
    if not isinstance(value, list):
        raise ConfigError(f"{name} must be a list of origins, got {value!r}")
    return tuple(_origin(item, name) for item in value)


def _path(value: Any, name: str) -> Path:
    return Path(_string(value, name))


def _integer(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


def _positive_int(value: Any, name: str) -> int:
    return _integer(value, name, 1)


def _count(value: Any, name: str) -> int:
    return _integer(value, name, 0)


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 86400:
        raise ConfigError(f"{name} must be a number of seconds above 0, got {value!r}")
    return float(value)


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


_VARS: dict[str, tuple[str, Callable[[Any, str], Any], Any]] = {
    "OWNER": ("owner", _owner, _REQUIRED),
    "UPSTREAM_URL": ("upstream_url", _http_url, _REQUIRED),
    "PUBLIC_ORIGIN": ("public_origin", _origin, _REQUIRED),
    "ALLOWED_ORIGINS": ("allowed_origins", _origins, []),
    "SITE_DIR": ("site_dir", _path, "dist"),
    "LEDGER_PATH": ("ledger_path", _path, "var/ledger.sqlite3"),
    "MAX_BODY_BYTES": ("max_body_bytes", _positive_int, 10 * 1024 * 1024),
    "MAX_UPLOAD_BYTES": ("max_upload_bytes", _positive_int, 100 * 1024 * 1024),
    "DEMO_DAILY_QUOTA": ("demo_daily_quota", _count, 50),
    "UPSTREAM_TIMEOUT_S": ("upstream_timeout_s", _seconds, 70),
    "TRUST_X_FORWARDED_FOR": ("trust_x_forwarded_for", _bool, False),
}


def _read_vars(
    table: Mapping[str, Any], sources: Mapping[str, str], environ: Mapping[str, str]
) -> dict[str, Any]:
    unknown = sorted(set(table) - set(_VARS))
    if unknown:
        raise ConfigError(f"unknown var {unknown[0]!r} in wrangler.toml; known: {', '.join(_VARS)}")
    values: dict[str, Any] = {}
    for var, (attribute, parse, default) in _VARS.items():
        if ENV_PREFIX + var in environ:
            value, source = environ[ENV_PREFIX + var], f"{ENV_PREFIX}{var} (environment)"
        elif var in table:
            value, source = table[var], f"wrangler.toml {sources[var]}"
        elif default is _REQUIRED:
            raise ConfigError(f"{var} is missing from [vars] in wrangler.toml")
        else:
            value, source = default, var
        values[attribute] = parse(value, source)
    return values


# --- tables ----------------------------------------------------------------------------------


def _read_ratelimits(items: Any, where: str) -> tuple[RateLimit, ...]:
    if not isinstance(items, list):
        raise ConfigError(f"{where} must be an array of tables ([[ratelimits]])")
    limits = []
    for index, item in enumerate(items):
        at = f"wrangler.toml {where}[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{at} must be a table")
        _reject_unknown(item, {"name", "limit", "period", "applies_to"}, at)
        applies_to = item.get("applies_to", "predictions")
        if applies_to not in ("predictions", "requests"):
            raise ConfigError(f"{at}.applies_to must be 'predictions' or 'requests'")
        limits.append(
            RateLimit(
                name=_string(item.get("name"), f"{at}.name"),
                limit=_positive_int(item.get("limit"), f"{at}.limit"),
                period=_positive_int(item.get("period"), f"{at}.period"),
                applies_to=applies_to,
            )
        )
    return tuple(limits)


def _read_routes(items: Any, where: str) -> tuple[Route, ...]:
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ConfigError(f"wrangler.toml {where} must be an array of tables ([[routes]])")
    return tuple(
        Route(pattern=_string(item.get("pattern"), f"wrangler.toml {where}[{i}].pattern"))
        for i, item in enumerate(items)
    )


def _stripe_url(value: Any, name: str) -> str:
    url = _http_url(value, name)
    # The secret key travels in the Authorization header: plain HTTP only to this machine.
    if urlsplit(url).scheme != "https" and urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"{name} must be https (plain http only for 127.0.0.1), got {url!r}")
    return url


_BILLING: dict[str, Callable[[Any, str], Any]] = {
    "stripe_api_base": _stripe_url,
    "stripe_meter_events_base": _stripe_url,
    "concurrency": _positive_int,
    "timeout_s": _seconds,
    "poll_interval_s": _seconds,
    "backoff_base_s": _seconds,
    "backoff_max_s": _seconds,
    "stream_above": _positive_int,
}


def _read_billing(table: Any, environ: Mapping[str, str]) -> BillingConfig:
    """`[billing]`, then `MODELFOLIO_BILLING_<KEY>` from the environment, e.g.
    MODELFOLIO_BILLING_STRIPE_API_BASE=http://127.0.0.1:12111 for the test Stripe."""
    if not isinstance(table, dict):
        raise ConfigError("wrangler.toml [billing] must be a table")
    _reject_unknown(table, set(_BILLING), "[billing]")
    values = {}
    for key, parse in _BILLING.items():
        variable = f"{ENV_PREFIX}BILLING_{key.upper()}"
        if variable in environ:
            values[key] = parse(environ[variable], f"{variable} (environment)")
        elif key in table:
            values[key] = parse(table[key], f"wrangler.toml [billing] {key}")
    return BillingConfig(**values)


def _date(value: Any, name: str) -> str:
    if isinstance(value, datetime.date):  # TOML has a native date type
        return value.isoformat()
    if value == "":
        return ""
    try:
        return datetime.date.fromisoformat(_string(value, name)).isoformat()
    except ValueError:
        raise ConfigError(f"{name} must be a date like 2025-01-01, got {value!r}") from None


# --- secrets ---------------------------------------------------------------------------------


def _read_secrets(config_dir: Path, environ: Mapping[str, str], required: bool) -> Secrets:
    dotvars_path = config_dir / ".dev.vars"
    dotvars = read_dotvars(dotvars_path)
    known = REQUIRED_SECRETS + OPTIONAL_SECRETS
    unknown = sorted(set(dotvars) - set(known))
    if unknown:
        raise ConfigError(
            f"{dotvars_path}: {unknown[0]} is not a secret the proxy reads; known: {', '.join(known)}"
        )
    values = {name: environ.get(name) or dotvars.get(name) or None for name in known}
    if required:
        for name in REQUIRED_SECRETS:
            if values[name] is None:
                raise ConfigError(missing_secret_message(name, config_dir))
    return Secrets(**{name.lower(): value for name, value in values.items()})


def missing_secret_message(name: str, config_dir: Path) -> str:
    return (
        f"{name} is not set. Put it in the environment, or in {config_dir / '.dev.vars'} "
        f"as {name}=... (copy .dev.vars.example to start)."
    )
