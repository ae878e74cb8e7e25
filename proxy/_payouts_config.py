"""`[payouts]` of wrangler.toml: which author wrote which model and their share of its revenue
(proxy/billing/payouts/ pays them through Stripe Connect).

    [payouts]
    default_share = "0.30"          # of each prediction's amount, for a model that names no share
    [payouts.models.digits]
    author = "ada"                  # the handle `python -m proxy authors add ada` gives an account
    share = "0.5"                   # this model's own share, from "0" to "1"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from proxy import _parse as parse
from proxy.errors import ConfigError


@dataclass(frozen=True)
class AuthorShare:
    author: str  # the author's handle, as `python -m proxy authors add` names it
    share: Decimal  # of the revenue of each of the model's predictions, from 0 to 1


@dataclass(frozen=True)
class PayoutsConfig:
    """`[payouts]`: who wrote which model and their share of its revenue, paid through Stripe
    Connect (proxy/billing/payouts/). A model with no author earns the owner alone."""

    default_share: Decimal = Decimal("0.30")
    models: dict[str, AuthorShare] = field(default_factory=dict)  # by owner/name


def read_payouts(
    table: Any, *, owner: str, reject_unknown: Callable[[Any, set[str], str], None]
) -> PayoutsConfig:
    if not isinstance(table, dict):
        raise ConfigError("wrangler.toml [payouts] must be a table")
    reject_unknown(table, {"default_share", "models"}, "[payouts]")
    default = parse.fraction(table.get("default_share", "0.30"), "wrangler.toml [payouts] default_share")
    models = table.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(
            "wrangler.toml [payouts.models] must hold a table per model: [payouts.models.digits]"
        )
    shares = {}
    for name, rule in models.items():
        where = f"wrangler.toml [payouts.models.{name}]"
        if not isinstance(rule, dict):
            raise ConfigError(f'{where} must be a table with author (and share, e.g. "0.5")')
        parse.model_names([name], f"{where}: the model's name")
        reject_unknown(rule, {"author", "share"}, f"[payouts.models.{name}]")
        author = parse.author(rule.get("author"), f"{where} author")
        share = parse.fraction(rule["share"], f"{where} share") if "share" in rule else default
        shares[f"{owner}/{name}"] = AuthorShare(author, share)
    return PayoutsConfig(default, shares)
