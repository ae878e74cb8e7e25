"""The headers the built site is served with: what a page may load, fetch and use."""

from __future__ import annotations

from pathlib import Path

from proxy.site import security_headers
from tests.support.proxy import closed_port_url, proxy_in_front_of


def directives(policy: str) -> dict[str, str]:
    return {part.split()[0]: part.strip() for part in policy.split(";") if part.strip()}


def test_pages_may_fetch_https_image_urls_and_use_the_camera_but_run_only_their_own_scripts(
    tmp_path: Path,
) -> None:
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "index.html").write_text("<h1>All models</h1>")
    with proxy_in_front_of(closed_port_url(), tmp_path, public_origin="https://models.example.com") as client:
        headers = client.get("/").headers

    csp = directives(headers["content-security-policy"])
    assert csp["script-src"] == "script-src 'self'"
    # A visitor's image URL is fetched by their browser, from any https origin; an https page may
    # not load plain http, so it is not offered.
    assert csp["connect-src"] == "connect-src 'self' https:"
    assert csp["img-src"] == "img-src 'self' data: blob:"
    assert "camera=(self)" in headers["permissions-policy"]
    assert "microphone=()" in headers["permissions-policy"]


def test_a_site_served_over_plain_http_may_fetch_plain_http_image_urls_too(tmp_path: Path) -> None:
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "index.html").write_text("<h1>All models</h1>")
    with proxy_in_front_of(closed_port_url(), tmp_path, public_origin="http://127.0.0.1:8000") as client:
        policy = client.get("/").headers["content-security-policy"]

    assert directives(policy)["connect-src"] == "connect-src 'self' https: http:"
    assert (
        directives(security_headers()["content-security-policy"])["connect-src"]
        == "connect-src 'self' https:"
    )
