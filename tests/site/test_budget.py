"""Each built page stays light: its stylesheets and scripts, with every module they import,
weigh at most 40 KB gzipped, and none of them comes from another origin."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

import build
from tests.support.paths import MODELS_DIR
from tests.support.site import OWNER, Elements

BUDGET_BYTES = 40 * 1024
_IMPORT = re.compile(r"""(?:\bimport\b[^"'();]*?\bfrom\s*|\bimport\s*\(?\s*)["']([^"']+)["']""")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("budget") / "dist"
    build.build(out, identity=OWNER, models_dir=MODELS_DIR)
    return out


def assets_of(dist: Path, html: str) -> set[str]:
    """The URLs of the page's CSS and JS, and of every module those scripts import."""
    elements = Elements(html)
    found = {str(a["href"]) for a in elements.all("link", rel="stylesheet")}
    scripts = [str(a["src"]) for a in elements.all("script") if a.get("src")]
    while scripts:
        url = scripts.pop()
        if url in found:
            continue
        found.add(url)
        source = (dist / url.lstrip("/")).read_text(encoding="utf-8")
        base = url.rsplit("/", 1)[0]
        scripts += [f"{base}/{name.removeprefix('./')}" for name in _IMPORT.findall(source)]
    return found


def pages(dist: Path) -> list[Path]:
    return sorted(dist.rglob("index.html"))


def test_every_page_weighs_at_most_40_kb_of_gzipped_css_and_js(shipped: Path) -> None:
    weights = {}
    for path in pages(shipped):
        assets = assets_of(shipped, path.read_text(encoding="utf-8"))
        assert all(url.startswith("/assets/") for url in assets), assets  # no CDN, no other origin
        weights[str(path.relative_to(shipped))] = sum(
            len(gzip.compress((shipped / url.lstrip("/")).read_bytes(), compresslevel=6)) for url in assets
        )

    assert len(weights) == 3
    assert all(weight <= BUDGET_BYTES for weight in weights.values()), weights


def test_the_measure_follows_module_imports(shipped: Path) -> None:
    assets = assets_of(shipped, (shipped / "models" / "digits" / "index.html").read_text())

    assert {"/assets/tryit.js", "/assets/api.js", "/assets/result.js", "/assets/clipboard.js"} <= assets
