"""The operator's Stripe commands and the worker's place in the proxy: `billing sync-catalog`
makes a meter and a metered price per model once; `billing reconcile` finds every difference."""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from devtools.teststripe.server import State
from devtools.teststripe.server import create_app as create_stripe
from proxy import Config, Secrets, create_app
from proxy.billing.money import meter_event_name
from proxy.cli import main
from proxy.config import BillingConfig
from tests.support.billing import MODELS, bill, catalog, drain, now, open_stores, subscribe
from tests.support.inference import TOKEN
from tests.support.servers import serve


def toml(upstream: str, stripe_url: str) -> str:
    return f"""
name = "billing-test"
main = "proxy/app.py"

[vars]
OWNER = "modelfolio"
UPSTREAM_URL = "{upstream}"
PUBLIC_ORIGIN = "http://127.0.0.1:8000"
LEDGER_PATH = "var/ledger.sqlite3"

[billing]
stripe_api_base = "{stripe_url}"
stripe_meter_events_base = "{stripe_url}"
timeout_s = 5
"""


def model_server(prices: dict[str, str]) -> Starlette:
    async def models(request: Request) -> JSONResponse:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        results = [
            {"owner": "modelfolio", "name": name, "price_per_second": price} for name, price in prices.items()
        ]
        return JSONResponse({"next": None, "previous": None, "results": results})

    return Starlette(routes=[Route("/v1/models", models)])


@pytest.fixture
def operator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[State, Path, dict[str, str]]]:
    prices = {"digits": "0.0005", "cats": "0.002"}
    app = create_stripe(seed=1)
    with serve(app) as stripe_url, serve(model_server(prices)) as upstream:
        folder = tmp_path / "wrangler-like-config"
        folder.mkdir()
        (folder / "wrangler.toml").write_text(toml(upstream, stripe_url))
        monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_operator")
        monkeypatch.setenv("INFERENCE_TOKEN", TOKEN)
        yield app.state.stripe, folder, prices


def test_sync_catalog_makes_one_meter_and_one_metered_price_per_model_once(operator, capsys) -> None:
    state, folder, _prices = operator
    assert main(["billing", "sync-catalog", "--config-dir", str(folder)]) == 0
    first = capsys.readouterr().out
    assert first.count("[created meter, price]") == 2
    assert main(["billing", "sync-catalog", "--config-dir", str(folder)]) == 0
    assert capsys.readouterr().out.count("[unchanged]") == 2

    meters = {m["event_name"]: m for m in state.of("billing.meter")}
    assert set(meters) == {"modelfolio_digits_predict_ms", "modelfolio_cats_predict_ms"}
    prices_at_stripe = {p["lookup_key"]: p for p in state.of("price")}
    digits = prices_at_stripe["modelfolio_digits_predict_ms_usd_month"]
    assert digits["unit_amount_decimal"] == "0.00005"  # $0.0005/s = 0.05 cents/s = 0.00005 cents/ms
    assert digits["recurring"] == {
        "interval": "month",
        "interval_count": 1,
        "usage_type": "metered",
        "meter": meters["modelfolio_digits_predict_ms"]["id"],
    }
    assert prices_at_stripe["modelfolio_cats_predict_ms_usd_month"]["unit_amount_decimal"] == "0.0002"


def test_a_changed_model_price_gets_a_new_stripe_price_that_takes_the_lookup_key(operator, capsys) -> None:
    state, folder, prices = operator
    assert main(["billing", "sync-catalog", "--config-dir", str(folder)]) == 0
    prices["digits"] = "0.00123"
    assert main(["billing", "sync-catalog", "--config-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "0.000123 cents/ms [created price]" in out
    keyed = [p for p in state.of("price") if p["lookup_key"] == "modelfolio_digits_predict_ms_usd_month"]
    assert [p["unit_amount_decimal"] for p in keyed] == ["0.000123"]
    assert len(state.of("billing.meter")) == 2


def test_reconcile_is_quiet_when_both_sides_agree_and_names_each_difference(operator, capsys) -> None:
    state, folder, _ = operator
    url = _stripe_url(folder)
    _meters, (alice, bob) = catalog(url, customers=2)
    stores = open_stores(f"sqlite:///{folder.parent / 'var' / 'ledger.sqlite3'}")
    with stores as opened:
        for customer in (alice, bob):
            subscribe(url, opened, customer, (MODELS[0],))
        for i, (customer, ms) in enumerate([(alice, 1250), (alice, 751), (bob, 30)]):
            bill(opened.usage, f"pred_{i}", customer, MODELS[0], ms, now())
            settled = now() - datetime.timedelta(hours=1)  # long enough ago for Stripe to have summed it
            opened.usage.mark_delivered([f"pred_{i}"], settled.isoformat())
            state.events.append(
                {
                    "event_name": meter_event_name(MODELS[0]),
                    "identifier": f"pred_{i}",
                    "payload": {"stripe_customer_id": customer, "value": str(ms)},
                    "timestamp": int(now().timestamp()),
                }
            )
    command = ["billing", "reconcile", "--config-dir", str(folder)]
    assert main(command) == 0
    assert "0 difference(s)" in capsys.readouterr().out

    state.events.pop(0)  # Stripe lost alice's 1250 ms
    state.events.append({**state.events[-1], "identifier": "stray", "timestamp": int(now().timestamp())})
    assert main(command) == 1
    out = capsys.readouterr().out
    assert f"DIFFERENCE {alice} modelfolio_digits_predict_ms: ledger 2001 ms, Stripe 751 ms" in out
    assert f"DIFFERENCE {bob} modelfolio_digits_predict_ms: ledger 30 ms, Stripe 60 ms" in out
    assert "2 difference(s)" in out

    since = (now() + datetime.timedelta(hours=1)).isoformat()
    assert main([*command, "--since", since, "--until", since]) == 0  # an empty window agrees


def _stripe_url(folder: Path) -> str:
    text = (folder / "wrangler.toml").read_text()
    return text.split('stripe_api_base = "')[1].split('"')[0]


def test_the_proxy_runs_the_worker_only_with_a_stripe_key(tmp_path: Path, caplog) -> None:
    app = create_stripe(seed=2)
    state = app.state.stripe
    with serve(app) as url:
        _meters, (alice,) = catalog(url, customers=1)
        with open_stores(f"sqlite:///{tmp_path / 'ledger.sqlite3'}") as opened:
            bill(opened.usage, "pred_1", alice, MODELS[0], 1250, now())
        settings: dict[str, Any] = {
            "owner": "modelfolio",
            "upstream_url": "http://127.0.0.1:9",
            "public_origin": "http://127.0.0.1:8000",
            "site_dir": tmp_path / "dist",
            "ledger_path": tmp_path / "ledger.sqlite3",
            "billing": BillingConfig(stripe_api_base=url, stripe_meter_events_base=url, poll_interval_s=0.05),
        }
        quick_start = create_app(Config(**settings, secrets=Secrets(inference_token=TOKEN)))
        with caplog.at_level(logging.INFO, logger="modelfolio.proxy"), serve(quick_start):
            pass
        assert [r for r in caplog.messages if "metering_disabled" in r] and state.events == []

        delivered = threading.Event()
        watcher = _OnLog("meter_event_delivered", delivered)
        logging.getLogger("modelfolio.proxy").addHandler(watcher)
        proxy = create_app(
            Config(**settings, secrets=Secrets(inference_token=TOKEN, stripe_secret_key="sk_test_k"))
        )
        try:
            with caplog.at_level(logging.INFO, logger="modelfolio.proxy"), serve(proxy):
                assert delivered.wait(20)  # logged after the ledger marks it delivered
        finally:
            logging.getLogger("modelfolio.proxy").removeHandler(watcher)
        with open_stores(f"sqlite:///{tmp_path / 'ledger.sqlite3'}") as opened:
            assert opened.usage.undelivered_meter_events() == []
        assert [e["identifier"] for e in state.events] == ["pred_1"]
    assert not any("sk_test_k" in message for message in caplog.messages)


class _OnLog(logging.Handler):
    def __init__(self, event: str, flag: threading.Event) -> None:
        super().__init__(logging.INFO)
        self.event, self.flag = event, flag

    def emit(self, record: logging.LogRecord) -> None:
        if f'"event":"{self.event}"' in record.getMessage():
            self.flag.set()


def test_a_stripe_address_in_plain_http_is_refused_unless_it_is_this_machine(tmp_path: Path) -> None:
    from proxy.config import load_config
    from proxy.errors import ConfigError

    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "wrangler.toml").write_text(toml("http://127.0.0.1:9", "http://stripe.example.com"))
    with pytest.raises(ConfigError, match="must be https"):
        load_config(folder, environ={"INFERENCE_TOKEN": "x"})
    environ = {"INFERENCE_TOKEN": "x", "MODELFOLIO_BILLING_STRIPE_API_BASE": "https://api.stripe.com"}
    (folder / "wrangler.toml").write_text(toml("http://127.0.0.1:9", "http://127.0.0.1:5"))
    assert load_config(folder, environ=environ).billing.stripe_api_base == "https://api.stripe.com"


def test_reconcile_fails_while_dead_letters_wait_and_the_command_resends_them_after_a_check(
    operator, capsys
) -> None:
    _state, folder, _ = operator
    url = _stripe_url(folder)
    _meters, (alice,) = catalog(url, customers=1)
    ledger = f"sqlite:///{folder.parent / 'var' / 'ledger.sqlite3'}"
    with open_stores(ledger) as opened:
        subscribe(url, opened, alice, (MODELS[0],))
        bill(opened.usage, "pred_1", alice, MODELS[0], 1250, now() - datetime.timedelta(minutes=30))
        opened.usage.dead_letter("pred_1", "Stripe refused it (400 x): no", now().isoformat())
    command = ["billing", "--config-dir", str(folder)]

    assert main(["billing", "reconcile", "--config-dir", str(folder)]) == 1
    assert "1 dead letter(s)" in capsys.readouterr().out
    assert main([*command, "dead-letters"]) == 0
    listed = capsys.readouterr().out
    assert "pred_1" in listed and "1250 ms" in listed and "Stripe refused it" in listed
    assert main([*command, "dead-letters", "resend"]) == 1
    assert "or pass --all" in capsys.readouterr().err
    assert main([*command, "dead-letters", "resend", "pred_nope"]) == 1
    assert "no dead letter with id pred_nope" in capsys.readouterr().err

    assert main([*command, "dead-letters", "resend", "--all"]) == 0
    assert "pred_1: resent" in capsys.readouterr().out
    with open_stores(ledger) as opened:
        drain(opened.usage, url)
    assert main(["billing", "reconcile", "--config-dir", str(folder)]) == 0
