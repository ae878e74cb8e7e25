"""The proxy's configuration: read once, checked, secrets kept out of sight."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from proxy import Config, ConfigError, Secrets, create_app, load_config
from proxy.config import CONFIG_DIR, REPO_ROOT, RateLimit
from tests.support.servers import serve

MINIMAL = """
name = "test-proxy"
main = "proxy/app.py"
compatibility_date = "2025-06-01"

[vars]
OWNER = "someone"
UPSTREAM_URL = "http://127.0.0.1:9001/"
PUBLIC_ORIGIN = "http://127.0.0.1:9000"
LEDGER_PATH = "var/l.sqlite3"

[[ratelimits]]
name = "predictions"
limit = 30
period = 10

[env.staging.vars]
PUBLIC_ORIGIN = "https://staging.example.com"
DEMO_DAILY_QUOTA = 5

[[env.staging.ratelimits]]
name = "strict"
limit = 1
period = 60
applies_to = "requests"
"""


def config_dir(tmp_path: Path, toml: str = MINIMAL, dev_vars: str | None = None) -> Path:
    folder = tmp_path / "wrangler-like-config"
    folder.mkdir(exist_ok=True)
    (folder / "wrangler.toml").write_text(textwrap.dedent(toml))
    if dev_vars is not None:
        (folder / ".dev.vars").write_text(textwrap.dedent(dev_vars))
    return folder


def test_the_public_surface_is_pinned() -> None:
    import proxy

    assert sorted(proxy.__all__) == [
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
    fields = {f.name for f in dataclasses.fields(Config)}
    assert {
        "owner",
        "upstream_url",
        "public_origin",
        "allowed_origins",
        "site_dir",
        "ledger_path",
        "max_body_bytes",
        "demo_daily_quota",
        "upstream_timeout_s",
        "trust_x_forwarded_for",
        "ratelimits",
        "routes",
        "secrets",
    } <= fields


def test_the_committed_config_loads_without_secrets_for_build_py() -> None:
    config = load_config(environ={}, require_secrets=False)
    assert config.owner == "modelfolio"
    assert config.public_origin == "http://127.0.0.1:8000"
    assert config.upstream_url == "http://127.0.0.1:8001"
    assert config.site_dir == REPO_ROOT / "dist"
    assert config.ledger_path == REPO_ROOT / "var" / "ledger.sqlite3"
    assert (config.max_body_bytes, config.demo_daily_quota) == (10485760, 50)
    assert config.trust_x_forwarded_for is False
    assert RateLimit("predictions", 30, 10) in config.ratelimits


@pytest.mark.parametrize("env", ["production", "test"])
def test_every_committed_environment_loads(env: str) -> None:
    config = load_config(env=env, environ={"INFERENCE_TOKEN": "t"})
    assert config.env == env and config.owner == "modelfolio"


def test_the_committed_example_secrets_are_known_and_obviously_fake() -> None:
    from proxy._dotvars import read_dotvars

    example = read_dotvars(CONFIG_DIR / ".dev.vars.example")
    assert set(example) == {
        "INFERENCE_TOKEN",
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "INFERENCE_WEBHOOK_SECRET",
        "METRICS_TOKEN",
        "ADMIN_TOKEN",
    }
    assert all("fake" in value for value in example.values())


def test_database_and_redis_urls_come_from_the_environment_or_dev_vars_never_shown(tmp_path: Path) -> None:
    folder = config_dir(tmp_path)
    (folder / ".dev.vars").write_text(
        'INFERENCE_TOKEN="t"\nDATABASE_URL="postgresql://app:s3cret@db.internal/ledger"\n'
    )
    from_file = load_config(folder, environ={})
    from_env = load_config(folder, environ={"REDIS_URL": "redis://:pw@cache.internal:6379/0"})
    assert from_file.database_url == "postgresql://app:s3cret@db.internal/ledger"
    assert from_env.limits.redis_url == "redis://:pw@cache.internal:6379/0"
    assert "s3cret" not in repr(from_file) and "pw@" not in repr(from_env)
    with pytest.raises(ConfigError, match=r"DATABASE_URL \(environment\) must be a postgresql://") as error:
        load_config(folder, environ={"DATABASE_URL": "mysql://root:hunter2@db/ledger"})
    assert "hunter2" not in str(error.value)


def test_missing_inference_token_stops_start_up_naming_it(tmp_path: Path) -> None:
    folder = config_dir(tmp_path)
    with pytest.raises(ConfigError, match="INFERENCE_TOKEN") as error:
        load_config(folder, environ={})
    assert ".dev.vars" in str(error.value)
    config = load_config(folder, environ={}, require_secrets=False)
    with pytest.raises(ConfigError, match="INFERENCE_TOKEN"):
        create_app(config)


def test_secrets_come_from_dev_vars_and_the_environment_wins(tmp_path: Path) -> None:
    folder = config_dir(
        tmp_path,
        dev_vars="""
        # comments and blank lines are fine

        INFERENCE_TOKEN="from-file # not a comment"
        export STRIPE_SECRET_KEY='sk_test_single'
        STRIPE_WEBHOOK_SECRET=whsec_plain   # a trailing comment
    """,
    )
    from_file = load_config(folder, environ={})
    assert from_file.secrets.inference_token == "from-file # not a comment"
    assert from_file.secrets.stripe_secret_key == "sk_test_single"
    assert from_file.secrets.stripe_webhook_secret == "whsec_plain"
    from_env = load_config(folder, environ={"INFERENCE_TOKEN": "from-env"})
    assert from_env.secrets.inference_token == "from-env"


def test_no_secret_shows_in_the_repr_of_the_config(tmp_path: Path) -> None:
    folder = config_dir(tmp_path)
    environ = {"INFERENCE_TOKEN": "tok-SECRET-1", "STRIPE_SECRET_KEY": "sk_test_SECRET_2"}
    config = load_config(folder, environ=environ)
    for text in (repr(config), str(config), repr(config.secrets), str(config.secrets)):
        assert "SECRET" not in text
    assert "inference_token=<set>" in repr(config) and "stripe_webhook_secret=<unset>" in repr(config)


def test_a_dev_vars_line_that_cannot_be_read_is_named_without_its_value(tmp_path: Path) -> None:
    folder = config_dir(tmp_path, dev_vars='INFERENCE_TOKEN="hunter2-unclosed\n')
    with pytest.raises(ConfigError, match=r"line 1 \(INFERENCE_TOKEN\)") as error:
        load_config(folder, environ={})
    assert "hunter2" not in str(error.value)


def test_an_unknown_secret_in_dev_vars_is_refused(tmp_path: Path) -> None:
    folder = config_dir(tmp_path, dev_vars="INFERENCE_TOKN=typo\n")
    with pytest.raises(ConfigError, match="INFERENCE_TOKN is not a secret"):
        load_config(folder, environ={})


def test_an_env_section_overrides_the_top_level(tmp_path: Path) -> None:
    folder = config_dir(tmp_path)
    base = load_config(folder, environ={"INFERENCE_TOKEN": "t"})
    staging = load_config(folder, "staging", environ={"INFERENCE_TOKEN": "t"})
    assert staging.public_origin == "https://staging.example.com"
    assert staging.demo_daily_quota == 5
    assert staging.owner == base.owner == "someone"  # vars merge key by key
    assert staging.ratelimits == (RateLimit("strict", 1, 60, "requests"),)  # tables replace
    picked_by_variable = load_config(folder, environ={"INFERENCE_TOKEN": "t", "MODELFOLIO_ENV": "staging"})
    assert picked_by_variable.env == "staging"


def test_an_unknown_env_name_is_named_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown environment 'prod'.*staging"):
        load_config(config_dir(tmp_path), "prod", environ={}, require_secrets=False)


def test_environment_variables_override_any_var(tmp_path: Path) -> None:
    environ = {
        "MODELFOLIO_UPSTREAM_URL": "http://127.0.0.1:7001",
        "MODELFOLIO_SITE_DIR": str(tmp_path / "site"),
        "MODELFOLIO_LEDGER_PATH": "elsewhere/ledger.sqlite3",
        "MODELFOLIO_DEMO_DAILY_QUOTA": "0",
        "MODELFOLIO_ALLOWED_ORIGINS": "https://a.example, https://b.example",
        "MODELFOLIO_TRUST_X_FORWARDED_FOR": "true",
    }
    config = load_config(config_dir(tmp_path), environ=environ, require_secrets=False)
    assert config.upstream_url == "http://127.0.0.1:7001"
    assert config.site_dir == tmp_path / "site"
    assert config.ledger_path == tmp_path / "elsewhere" / "ledger.sqlite3"
    assert config.demo_daily_quota == 0
    assert config.allowed_origins == ("https://a.example", "https://b.example")
    assert config.trust_x_forwarded_for is True


def test_relative_paths_resolve_against_the_repo_root_also_after_replace(tmp_path: Path) -> None:
    config = load_config(config_dir(tmp_path), environ={}, require_secrets=False)
    assert config.ledger_path == tmp_path / "var" / "l.sqlite3"
    assert config.upstream_url == "http://127.0.0.1:9001"  # trailing slash dropped
    moved = dataclasses.replace(config, site_dir="public", ledger_path=tmp_path / "x.sqlite3")
    assert moved.site_dir == tmp_path / "public"
    assert moved.ledger_path == tmp_path / "x.sqlite3"


def test_config_can_be_built_directly_for_tests(tmp_path: Path) -> None:
    config = Config(
        owner="o",
        upstream_url="http://127.0.0.1:1",
        public_origin="http://127.0.0.1:2",
        ledger_path=tmp_path / "l.sqlite3",
        secrets=Secrets(inference_token="t"),
    )
    assert config.site_dir == REPO_ROOT / "dist"
    with serve(create_app(config)) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("limit = 30", 'limit = "lots"'), r"ratelimits\[0\]\.limit"),
        (("period = 10", "period = 0"), r"ratelimits\[0\]\.period"),
        (('LEDGER_PATH = "var/l.sqlite3"', "MAX_BODY_BYTES = 1.5"), "MAX_BODY_BYTES"),
        (('LEDGER_PATH = "var/l.sqlite3"', "DEMO_DAILY_QUOTA = -1"), "DEMO_DAILY_QUOTA"),
        (('LEDGER_PATH = "var/l.sqlite3"', 'TRUST_X_FORWARDED_FOR = "maybe"'), "TRUST_X_FORWARDED_FOR"),
        (('LEDGER_PATH = "var/l.sqlite3"', 'UPSTREAM_URL2 = "x"'), "UPSTREAM_URL2"),
        (('OWNER = "someone"', 'OWNER = "some one"'), "OWNER"),
        (('PUBLIC_ORIGIN = "http://127.0.0.1:9000"', 'PUBLIC_ORIGIN = "127.0.0.1:9000"'), "PUBLIC_ORIGIN"),
        (('OWNER = "someone"', ""), "OWNER is missing"),
        (('main = "proxy/app.py"', 'mian = "proxy/app.py"'), "'mian'"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(tmp_path: Path, change: tuple[str, str], named: str) -> None:
    old, new = change
    assert old in MINIMAL
    folder = config_dir(tmp_path, MINIMAL.replace(old, new, 1))
    with pytest.raises(ConfigError, match=named):
        load_config(folder, environ={}, require_secrets=False)


def test_a_bad_environment_override_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MODELFOLIO_MAX_BODY_BYTES"):
        load_config(config_dir(tmp_path), environ={"MODELFOLIO_MAX_BODY_BYTES": "ten"}, require_secrets=False)


def test_a_missing_config_file_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no proxy configuration at"):
        load_config(tmp_path, environ={}, require_secrets=False)


def test_reading_the_config_does_not_load_the_web_stack_or_stripe() -> None:
    code = (
        "import sys, proxy.config, proxy.errors; "
        "print(sorted(m for m in ('starlette', 'stripe', 'proxy.app') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert loaded.stdout.strip() == "[]"


def test_a_resend_window_past_stripes_day_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "wrangler.toml").write_text(
        '[vars]\nOWNER = "o"\nUPSTREAM_URL = "http://127.0.0.1:9"\nPUBLIC_ORIGIN = "http://127.0.0.1:8000"\n'
        "\n[billing]\nresend_window_s = 86000\n"
    )
    with pytest.raises(ConfigError, match="at most 23 hours"):
        load_config(folder, environ={"INFERENCE_TOKEN": "x"})
