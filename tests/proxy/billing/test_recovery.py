"""A customer who lost their key gets a new one through a one-time link the owner's CLI makes
(the test reads the link where the CLI writes it): the old keys stop, the new one is shown once,
the link works once; with billing on, only a customer with a live subscription gets a link."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from proxy.cli import main
from tests.support.billing import KEY, Shop
from tests.support.proxy import FakeInference, bearer, issue_key, predict, proxy_in_front_of

LINK = re.compile(r"http://127\.0\.0\.1:8000(/billing/recover\?token=[A-Za-z0-9_-]{43})")


def owner_config(tmp_path: Path, ledger: Path, stripe_url: str | None = None) -> Path:
    """The owner's config folder: the proxy's ledger, and the test Stripe when given."""
    folder = tmp_path / "config"
    folder.mkdir(parents=True)
    billing = f'[billing]\nstripe_api_base = "{stripe_url}"\nstripe_meter_events_base = "{stripe_url}"\n'
    (folder / "wrangler.toml").write_text(
        '[vars]\nOWNER = "modelfolio"\nUPSTREAM_URL = "http://127.0.0.1:9"\n'
        f'PUBLIC_ORIGIN = "http://127.0.0.1:8000"\nLEDGER_PATH = "{ledger}"\n'
        + (billing if stripe_url else "")
    )
    return folder


def recover(client: httpx.Client, path: str) -> httpx.Response:
    page = client.get(path)
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert page.status_code == 200 and token and not KEY.search(page.text), page.text
    return client.post("/billing/recover", data={"token": token.group(1)})


def test_a_one_time_link_replaces_every_key_with_one_shown_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lost = issue_key(tmp_path, "cus_Alice")
    other = issue_key(tmp_path, "cus_Alice")
    folder = owner_config(tmp_path, tmp_path / "ledger.sqlite3")
    assert main(["keys", "recover", "--customer", "cus_Alice", "--config-dir", str(folder)]) == 0
    (path,) = LINK.findall(capsys.readouterr().out)
    with proxy_in_front_of(FakeInference().app(), tmp_path) as client:
        shown = recover(client, path)
        (new,) = KEY.findall(shown.text)
        again = client.post("/billing/recover", data={"token": path.rsplit("=", 1)[1]})
        reopened = client.get(path)
        answers = [predict(client, bearer(key)) for key in (lost, other, new)]
        nonsense = client.get("/billing/recover?token=short")
    assert shown.status_code == 200 and shown.headers["cache-control"] == "no-store"
    assert shown.headers["referrer-policy"] == "no-referrer"
    assert again.status_code == reopened.status_code == 410 and not KEY.search(again.text)
    assert [a.status_code for a in answers] == [401, 401, 201] and "revoked" in answers[0].json()["detail"]
    assert nonsense.status_code == 400


def test_a_link_needs_a_live_subscription_when_billing_is_on(
    shop: Shop, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = owner_config(tmp_path / "owner", shop.ledger_path, shop.stripe_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_owner")
    _key, session = shop.buy()
    assert main(["keys", "recover", "--customer", session["customer"], "--config-dir", str(folder)]) == 0
    (path,) = LINK.findall(capsys.readouterr().out)
    (new,) = KEY.findall(recover(shop.proxy, path).text)
    assert predict(shop.proxy, bearer(new)).status_code == 201

    shop.sdk.v1.subscriptions.cancel(session["subscription"])
    assert main(["keys", "recover", "--customer", session["customer"], "--config-dir", str(folder)]) == 1
    assert "its subscription is canceled" in capsys.readouterr().err
    assert main(["keys", "recover", "--customer", "alice", "--config-dir", str(folder)]) == 2
