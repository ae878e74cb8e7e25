"""`[payouts]` in wrangler.toml and ADMIN_TOKEN: who wrote which model and their share, read and
checked once at start; a share that is not an exact decimal from 0 to 1, an unknown key, a bad
handle, or an admin token too short to be safe stops the proxy with a message naming it."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from proxy.config import load_config
from proxy.errors import ConfigError

BASE = """
[vars]
OWNER = "modelfolio"
UPSTREAM_URL = "http://127.0.0.1:8001"
PUBLIC_ORIGIN = "http://127.0.0.1:8000"
"""


def folder_with(tmp_path: Path, extra: str) -> Path:
    folder = tmp_path / "wrangler-like-config"
    folder.mkdir(exist_ok=True)
    (folder / "wrangler.toml").write_text(BASE + extra)
    return folder


def test_each_model_names_its_author_and_takes_its_own_share_or_the_default(tmp_path: Path) -> None:
    folder = folder_with(
        tmp_path,
        """
[payouts]
default_share = "0.25"
[payouts.models.digits]
author = "ada"
share = "0.5"
[payouts.models.defects]
author = "bob"
""",
    )
    payouts = load_config(folder, environ={}, require_secrets=False).payouts

    assert {model: (rule.author, rule.share) for model, rule in payouts.models.items()} == {
        "modelfolio/digits": ("ada", Decimal("0.5")),
        "modelfolio/defects": ("bob", Decimal("0.25")),
    }


def test_without_payouts_no_model_has_an_author(tmp_path: Path) -> None:
    assert load_config(folder_with(tmp_path, ""), environ={}, require_secrets=False).payouts.models == {}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            '[payouts.models.digits]\nauthor = "ada"\nshare = 0.5',
            'share must be a decimal string from "0" to "1"',
        ),
        (
            '[payouts.models.digits]\nauthor = "ada"\nshare = "1.5"',
            'share must be a decimal string from "0" to "1"',
        ),
        ('[payouts]\ndefault_share = "-0.1"', "default_share must be a decimal string"),
        ('[payouts.models.digits]\nauthor = "Ada L."', "author must be an author handle like 'ada'"),
        ('[payouts.models.digits]\nshare = "0.5"', "author must be a non-empty string"),
        ('[payouts.models.digits]\nauthor = "ada"\npercent = 50', "unknown key 'percent'"),
        ('[payouts.models."Digits Model"]\nauthor = "ada"', "model names like ['digits']"),
        ("[payouts]\nauthors = {}", "unknown key 'authors' in [payouts]"),
    ],
)
def test_a_wrong_payouts_table_stops_the_proxy_naming_what_is_wrong(
    tmp_path: Path, table: str, message: str
) -> None:
    with pytest.raises(
        ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")
    ):
        load_config(folder_with(tmp_path, table), environ={}, require_secrets=False)


def test_an_admin_token_too_short_to_be_safe_is_refused_and_never_shown(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, "")
    with pytest.raises(ConfigError, match="ADMIN_TOKEN must be at least 32 random characters") as error:
        load_config(folder, environ={"ADMIN_TOKEN": "hunter2"}, require_secrets=False)
    assert "hunter2" not in str(error.value)

    config = load_config(folder, environ={"ADMIN_TOKEN": "s3cret" * 8}, require_secrets=False)
    assert config.secrets.admin_token == "s3cret" * 8
    assert "s3cret" not in repr(config) and "admin_token=<set>" in repr(config.secrets)
