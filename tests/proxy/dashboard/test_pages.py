"""The owner dashboard over HTTP: only the holder of ADMIN_TOKEN gets in, through a form that
sets an HttpOnly, SameSite=Strict cookie that is not the token; nothing is cached; the token is
never in a page or a log line; bad periods and other sites' forms get clear refusals."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy import Secrets
from proxy.storage import open_database
from tests.support.dashboard import ADMIN_TOKEN, seed_history
from tests.support.inference import TOKEN
from tests.support.proxy import FakeInference, proxy_in_front_of


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[httpx.Client]:
    database = open_database(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    seed_history(database, datetime.datetime.now(datetime.UTC).date())
    database.close()
    secrets = Secrets(inference_token=TOKEN, admin_token=ADMIN_TOKEN)
    with proxy_in_front_of(FakeInference().app(), tmp_path, secrets=secrets) as client:
        yield client


def sign_in(client: httpx.Client, token: str = ADMIN_TOKEN) -> httpx.Response:
    return client.post(
        "/admin/login", data={"token": token}, headers={"origin": str(client.base_url).rstrip("/")}
    )


def test_a_visitor_gets_the_sign_in_form_and_nothing_else(proxy: httpx.Client) -> None:
    page = proxy.get("/admin")

    assert page.status_code == 200 and 'type="password"' in page.text
    assert "Predictions" not in page.text and "cus_acme" not in page.text
    assert "no-store" in page.headers["cache-control"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script" not in page.text


def test_the_token_signs_in_once_and_the_cookie_is_not_the_token(
    proxy: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modelfolio.proxy")
    wrong = sign_in(proxy, "not-the-token-" + "x" * 30)
    assert (
        wrong.status_code == 401
        and "not the admin token" in wrong.text
        and "mf_admin" not in wrong.headers.get("set-cookie", "")
    )

    answer = sign_in(proxy)
    cookie = answer.headers["set-cookie"]
    assert answer.status_code == 303 and answer.headers["location"] == "/admin"
    assert all(part in cookie for part in ("HttpOnly", "SameSite=strict", "Path=/admin", "Max-Age=28800"))
    assert ADMIN_TOKEN not in cookie
    page = proxy.get("/admin")
    assert page.status_code == 200 and "Top customers" in page.text and "cus_acme" in page.text
    assert ADMIN_TOKEN not in page.text and "no-store" in page.headers["cache-control"]
    assert ADMIN_TOKEN not in caplog.text and "admin_sign_in_refused" in caplog.text


def test_a_forged_or_tampered_cookie_is_refused(proxy: httpx.Client) -> None:
    sign_in(proxy)
    version, expires, mac = proxy.cookies["mf_admin"].split(".")
    for forged in (
        f"{version}.{int(expires) + 86400 * 365}.{mac}",
        f"{version}.{expires}.{'0' * 64}",
        "garbage",
    ):
        proxy.cookies.set("mf_admin", forged, path="/admin")
        assert 'type="password"' in proxy.get("/admin").text


def test_a_script_may_use_the_token_as_a_bearer_header(proxy: httpx.Client) -> None:
    page = proxy.get("/admin", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert page.status_code == 200 and "Owed to authors" in page.text
    assert 'type="password"' in proxy.get("/admin", headers={"Authorization": "Bearer nope"}).text


def test_another_sites_form_cannot_sign_in_or_out(proxy: httpx.Client) -> None:
    refused = proxy.post(
        "/admin/login", data={"token": ADMIN_TOKEN}, headers={"origin": "https://evil.example"}
    )
    assert refused.status_code == 403 and "mf_admin" not in refused.headers.get("set-cookie", "")
    sign_in(proxy)
    assert proxy.post("/admin/logout", headers={"origin": "https://evil.example"}).status_code == 403
    assert proxy.post("/admin/logout").status_code == 303
    assert 'type="password"' in proxy.get("/admin").text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=yesterday&to=2026-03-01", "Dates are written YYYY-MM-DD"),
        ("from=2026-03-10&to=2026-03-01", "is after"),
        ("from=2024-01-01&to=2026-03-01", "at most 366 days"),
    ],
)
def test_a_bad_period_is_a_400_saying_why_and_shows_the_last_30_days(
    proxy: httpx.Client, query: str, message: str
) -> None:
    sign_in(proxy)
    page = proxy.get(f"/admin?{query}")
    assert page.status_code == 400 and message in page.text and "cus_acme" in page.text


def test_a_chosen_period_shows_only_its_days(proxy: httpx.Client) -> None:
    sign_in(proxy)
    today = datetime.datetime.now(datetime.UTC).date()
    later = today + datetime.timedelta(days=10)
    page = proxy.get(f"/admin?from={today + datetime.timedelta(days=1)}&to={later}")
    assert page.status_code == 200 and "No predictions in this period." in page.text


def test_without_an_admin_token_there_is_no_dashboard(tmp_path: Path) -> None:
    with proxy_in_front_of(FakeInference().app(), tmp_path, secrets=Secrets(inference_token=TOKEN)) as client:
        assert client.get("/admin").status_code == 404
        assert client.post("/admin/login", data={"token": "x" * 40}).status_code == 404
