"""The owner's key commands hold keys to what pays for them: `keys create` refuses a customer
without a live subscription at Stripe, and mirrors the live one so the new key works at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import stripe

from devtools.teststripe.server import State
from proxy.cli import main
from tests.support.billing import make_catalog, open_stores, subscribe

TOML = """
[vars]
OWNER = "modelfolio"
UPSTREAM_URL = "http://127.0.0.1:9"
PUBLIC_ORIGIN = "http://127.0.0.1:8000"
LEDGER_PATH = "var/ledger.sqlite3"

[billing]
stripe_api_base = "{url}"
stripe_meter_events_base = "{url}"
timeout_s = 5
"""


@pytest.fixture
def owner(
    tmp_path: Path, stripe_server: tuple[State, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, str]:
    """The owner's config folder, billing through the test Stripe, with a priced model."""
    _state, url = stripe_server
    folder = tmp_path / "wrangler-like-config"
    folder.mkdir()
    (folder / "wrangler.toml").write_text(TOML.format(url=url))
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_owner")
    make_catalog(url)
    return folder, url


def sdk(url: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_owner", base_addresses={"api": url}, http_client=stripe.RequestsClient()
    )


def test_keys_create_refuses_a_customer_without_a_live_subscription(
    owner: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, url = owner
    customer = sdk(url).v1.customers.create({"name": "No plan"}).id
    assert main(["keys", "create", "--customer", customer, "--config-dir", str(folder)]) == 1
    refused = capsys.readouterr()
    assert "has no subscription" in refused.err and "mf_" not in refused.out

    with open_stores(f"sqlite:///{folder.parent / 'var' / 'ledger.sqlite3'}") as stores:
        subscription = subscribe(url, stores, customer)
    sdk(url).v1.subscriptions.cancel(subscription)
    assert main(["keys", "create", "--customer", customer, "--config-dir", str(folder)]) == 1
    assert "its subscription is canceled" in capsys.readouterr().err


def test_keys_create_mirrors_a_live_subscription_the_ledger_did_not_know(
    owner: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, url = owner
    client = sdk(url)
    customer = client.v1.customers.create({"name": "Paid elsewhere"}).id
    price = client.v1.prices.list({"active": True}).data[0].id
    client.v1.subscriptions.create({"customer": customer, "items": [{"price": price}]})
    assert main(["keys", "create", "--customer", customer, "--config-dir", str(folder)]) == 0
    assert "shown only this once" in capsys.readouterr().out
    with open_stores(f"sqlite:///{folder.parent / 'var' / 'ledger.sqlite3'}") as stores:
        access = stores.subscriptions.access(customer)
    assert access.status == "active" and list(access.prices) == ["modelfolio_digits_predict_ms"]
