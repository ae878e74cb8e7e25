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
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from proxy import _parse as parse
from proxy._dotvars import read_dotvars
from proxy._payouts_config import PayoutsConfig, read_payouts
from proxy.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "wrangler-like-config"
ENV_PREFIX = "MODELFOLIO_"
REQUIRED_SECRETS = ("INFERENCE_TOKEN",)
OPTIONAL_SECRETS = (
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "INFERENCE_WEBHOOK_SECRET",
    "METRICS_TOKEN",
    "ADMIN_TOKEN",
)
ADMIN_TOKEN_MIN_LENGTH = 32  # the owner dashboard's password: long and random, never guessed

_TABLES = ("billing", "ledger", "limits", "cache", "payouts")  # merged key by key from [env.NAME]
_ENV_KEYS = {"name", "compatibility_date", "vars", "routes", "ratelimits", *_TABLES}
_TOP_KEYS = {*_ENV_KEYS, "main", "env"}


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
    lease_s: float = 60.0  # a worker's hold on a lane; a dead worker's lanes pass on after it
    # Retries of a meter event stop this long after its first attempt: Stripe forgets identifiers
    # after about 24 h, and a blind resend after that may count twice (proxy/billing/meter_rules.py).
    resend_window_s: float = 23 * 3600.0
    reminder_s: float = 3600.0  # without STRIPE_SECRET_KEY, how often the log says the outbox grows


@dataclass(frozen=True)
class LedgerConfig:
    """`[ledger]`: the database. None: the SQLite file at LEDGER_PATH (one machine)."""

    url: str | None = field(default=None, repr=False)  # may hold a password
    pool_size: int = 10  # connections per proxy process (PostgreSQL)


@dataclass(frozen=True)
class LimitsConfig:
    """`[limits]`: where rate limits, the demo quota, the result cache and idempotency keys live.
    None: in this process's memory (one process)."""

    redis_url: str | None = field(default=None, repr=False)  # may hold a password


@dataclass(frozen=True)
class CacheRule:
    ttl_s: int
    bill_fraction: Decimal  # of the original's milliseconds; 0 makes a cache hit free


@dataclass(frozen=True)
class CacheConfig:
    """`[cache]`: the result cache (proxy/cache.py), off unless a model is listed under
    `[cache.models.<name>]` with `ttl_s` and `bill_fraction`."""

    rules: dict[str, CacheRule] = field(default_factory=dict)  # by owner/name
    max_entries: int = 10_000  # the in-process LRU's bound, without Redis


@dataclass(frozen=True)
class Secrets:
    inference_token: str | None = field(default=None, repr=False)
    stripe_secret_key: str | None = field(default=None, repr=False)
    stripe_webhook_secret: str | None = field(default=None, repr=False)
    inference_webhook_secret: str | None = field(default=None, repr=False)  # signs /internal/inference-events
    metrics_token: str | None = field(default=None, repr=False)  # for /metrics from off this machine
    admin_token: str | None = field(default=None, repr=False)  # the owner dashboard at /admin

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
    public_results: tuple[str, ...] = ()  # models whose predictions anyone with the id may read
    ratelimits: tuple[RateLimit, ...] = ()
    routes: tuple[Route, ...] = ()
    billing: BillingConfig = BillingConfig()
    ledger: LedgerConfig = LedgerConfig()
    limits: LimitsConfig = LimitsConfig()
    cache: CacheConfig = CacheConfig()
    payouts: PayoutsConfig = field(default_factory=PayoutsConfig)
    secrets: Secrets = Secrets()
    name: str = "modelfolio-proxy"
    env: str | None = None
    compatibility_date: str = ""
    config_dir: Path = CONFIG_DIR

    @property
    def database_url(self) -> str:
        return self.ledger.url or f"sqlite:///{self.ledger_path}"

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
    # DATABASE_URL and REDIS_URL may hold passwords: like the secrets, .dev.vars may hold them.
    dotvars = read_dotvars(config_dir / ".dev.vars")
    connections = {name: dotvars[name] for name in _WELL_KNOWN.values() if name in dotvars}
    environ = {**connections, **environ}
    return Config(
        **variables,
        ratelimits=_read_ratelimits(merged.get("ratelimits", []), sources["ratelimits"]),
        routes=_read_routes(merged.get("routes", []), sources["routes"]),
        billing=BillingConfig(**_read_table("billing", merged.get("billing", {}), _BILLING, environ)),
        ledger=LedgerConfig(**_read_table("ledger", merged.get("ledger", {}), _LEDGER, environ)),
        limits=LimitsConfig(**_read_table("limits", merged.get("limits", {}), _LIMITS, environ)),
        cache=_read_cache(merged.get("cache", {}), owner=variables["owner"]),
        payouts=read_payouts(
            merged.get("payouts", {}), owner=variables["owner"], reject_unknown=_reject_unknown
        ),
        secrets=_read_secrets(config_dir, environ, require_secrets),
        name=parse.string(merged.get("name", "modelfolio-proxy"), sources["name"]),
        env=env,
        compatibility_date=parse.date(merged.get("compatibility_date", ""), "compatibility_date"),
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
        if key in _TABLES and isinstance(value, dict):
            merged[key] = {**merged.get(key, {}), **value}
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


_VARS: dict[str, tuple[str, Callable[[Any, str], Any], Any]] = {
    "OWNER": ("owner", parse.owner, _REQUIRED),
    "UPSTREAM_URL": ("upstream_url", parse.http_url, _REQUIRED),
    "PUBLIC_ORIGIN": ("public_origin", parse.origin, _REQUIRED),
    "ALLOWED_ORIGINS": ("allowed_origins", parse.origins, []),
    "SITE_DIR": ("site_dir", parse.path, "dist"),
    "LEDGER_PATH": ("ledger_path", parse.path, "var/ledger.sqlite3"),
    "MAX_BODY_BYTES": ("max_body_bytes", parse.positive_int, 10 * 1024 * 1024),
    "MAX_UPLOAD_BYTES": ("max_upload_bytes", parse.positive_int, 100 * 1024 * 1024),
    "DEMO_DAILY_QUOTA": ("demo_daily_quota", parse.count, 50),
    "UPSTREAM_TIMEOUT_S": ("upstream_timeout_s", parse.seconds, 70),
    "TRUST_X_FORWARDED_FOR": ("trust_x_forwarded_for", parse.boolean, False),
    "PUBLIC_RESULTS": ("public_results", parse.model_names, []),
}


def _read_vars(
    table: Mapping[str, Any], sources: Mapping[str, str], environ: Mapping[str, str]
) -> dict[str, Any]:
    unknown = sorted(set(table) - set(_VARS))
    if unknown:
        raise ConfigError(f"unknown var {unknown[0]!r} in wrangler.toml; known: {', '.join(_VARS)}")
    values: dict[str, Any] = {}
    for var, (attribute, check, default) in _VARS.items():
        if ENV_PREFIX + var in environ:
            value, source = environ[ENV_PREFIX + var], f"{ENV_PREFIX}{var} (environment)"
        elif var in table:
            value, source = table[var], f"wrangler.toml {sources[var]}"
        elif default is _REQUIRED:
            raise ConfigError(f"{var} is missing from [vars] in wrangler.toml")
        else:
            value, source = default, var
        values[attribute] = check(value, source)
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
                name=parse.string(item.get("name"), f"{at}.name"),
                limit=parse.positive_int(item.get("limit"), f"{at}.limit"),
                period=parse.positive_int(item.get("period"), f"{at}.period"),
                applies_to=applies_to,
            )
        )
    return tuple(limits)


def _read_routes(items: Any, where: str) -> tuple[Route, ...]:
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ConfigError(f"wrangler.toml {where} must be an array of tables ([[routes]])")
    return tuple(
        Route(pattern=parse.string(item.get("pattern"), f"wrangler.toml {where}[{i}].pattern"))
        for i, item in enumerate(items)
    )


_BILLING: dict[str, Callable[[Any, str], Any]] = {
    "stripe_api_base": parse.stripe_url,
    "stripe_meter_events_base": parse.stripe_url,
    "concurrency": parse.positive_int,
    "timeout_s": parse.seconds,
    "poll_interval_s": parse.seconds,
    "backoff_base_s": parse.seconds,
    "backoff_max_s": parse.seconds,
    "stream_above": parse.positive_int,
    "lease_s": parse.seconds,
    "resend_window_s": parse.resend_window,
    "reminder_s": parse.seconds,
}


_LEDGER: dict[str, Callable[[Any, str], Any]] = {"url": parse.database_url, "pool_size": parse.positive_int}
_LIMITS: dict[str, Callable[[Any, str], Any]] = {"redis_url": parse.redis_url}
# The usual names of a deployment's database and cache, beside MODELFOLIO_LEDGER_URL and the rest.
_WELL_KNOWN = {("ledger", "url"): "DATABASE_URL", ("limits", "redis_url"): "REDIS_URL"}


def _read_table(
    section: str, table: Any, checks: Mapping[str, Callable[[Any, str], Any]], environ: Mapping[str, str]
) -> dict[str, Any]:
    """`[section]` of wrangler.toml, then `MODELFOLIO_<SECTION>_<KEY>` from the environment (e.g.
    MODELFOLIO_BILLING_STRIPE_API_BASE=http://127.0.0.1:12111 for the test Stripe), then the
    well-known DATABASE_URL and REDIS_URL."""
    if not isinstance(table, dict):
        raise ConfigError(f"wrangler.toml [{section}] must be a table")
    _reject_unknown(table, set(checks), f"[{section}]")
    values = {}
    for key, check in checks.items():
        variables = [f"{ENV_PREFIX}{section.upper()}_{key.upper()}", _WELL_KNOWN.get((section, key), "")]
        given = [variable for variable in variables if variable and environ.get(variable)]
        if given:
            values[key] = check(environ[given[-1]], f"{given[-1]} (environment)")
        elif key in table:
            values[key] = check(table[key], f"wrangler.toml [{section}] {key}")
    return values


def _read_cache(table: Any, *, owner: str) -> CacheConfig:
    if not isinstance(table, dict):
        raise ConfigError("wrangler.toml [cache] must be a table")
    _reject_unknown(table, {"models", "max_entries"}, "[cache]")
    models = table.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError("wrangler.toml [cache.models] must hold a table per model: [cache.models.digits]")
    rules = {}
    for name, rule in models.items():
        where = f"wrangler.toml [cache.models.{name}]"
        if not isinstance(rule, dict):
            raise ConfigError(f"{where} must be a table with ttl_s and bill_fraction")
        _reject_unknown(rule, {"ttl_s", "bill_fraction"}, f"[cache.models.{name}]")
        if "ttl_s" not in rule or "bill_fraction" not in rule:
            raise ConfigError(f'{where} needs ttl_s (seconds) and bill_fraction (e.g. "0.1")')
        ttl_s = parse.positive_int(rule["ttl_s"], f"{where} ttl_s")
        rules[f"{owner}/{name}"] = CacheRule(
            ttl_s, parse.fraction(rule["bill_fraction"], f"{where} bill_fraction")
        )
    max_entries = parse.positive_int(table.get("max_entries", 10_000), "wrangler.toml [cache] max_entries")
    return CacheConfig(rules, max_entries)


# --- secrets ---------------------------------------------------------------------------------


def _read_secrets(config_dir: Path, environ: Mapping[str, str], required: bool) -> Secrets:
    dotvars_path = config_dir / ".dev.vars"
    dotvars = read_dotvars(dotvars_path)
    known = REQUIRED_SECRETS + OPTIONAL_SECRETS
    unknown = sorted(set(dotvars) - set(known) - set(_WELL_KNOWN.values()))
    if unknown:
        raise ConfigError(
            f"{dotvars_path}: {unknown[0]} is not a secret the proxy reads; known: {', '.join(known)}"
        )
    values = {name: environ.get(name) or dotvars.get(name) or None for name in known}
    if required:
        for name in REQUIRED_SECRETS:
            if values[name] is None:
                raise ConfigError(missing_secret_message(name, config_dir))
    admin = values["ADMIN_TOKEN"]
    if admin is not None and len(admin) < ADMIN_TOKEN_MIN_LENGTH:
        raise ConfigError(
            f"ADMIN_TOKEN must be at least {ADMIN_TOKEN_MIN_LENGTH} random characters, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return Secrets(**{name.lower(): value for name, value in values.items()})


def missing_secret_message(name: str, config_dir: Path) -> str:
    return (
        f"{name} is not set. Put it in the environment, or in {config_dir / '.dev.vars'} "
        f"as {name}=... (copy .dev.vars.example to start)."
    )
