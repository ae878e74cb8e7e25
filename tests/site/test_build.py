"""`python build.py`: the portfolio a visitor sees, built from model folders without torch or a GPU."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import jinja2
import pytest

import build
from inference.errors import ConfigError
from tests.support.site import OWNER, Elements, add_model, page, text_of

KNOBS_PREDICTOR = """
from inference.predictor import BasePredictor, Image, Input


class Predictor(BasePredictor):
    def predict(
        self,
        image: Image = Input(description="A close-up photo of the surface."),
        threshold: float = Input(default=0.5, ge=0.0, le=1.0, description="Lowest confidence shown."),
        top_k: int = Input(default=5, ge=1, le=10, description="How many classes to return."),
        mode: str = Input(default="accurate", choices=["fast", "accurate"], description="Speed or accuracy."),
        explain: bool = Input(default=False, description="Also return a heat map."),
        note: str = Input(default="", description="Echoed back."),
    ) -> dict:
        raise NotImplementedError
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One portfolio with a listed image model, a listed model with settings and an unlisted one."""
    base = tmp_path_factory.mktemp("portfolio")
    models = base / "models"
    add_model(models, "digits", title="Handwritten digits", accuracy=0.983, latency_ms=3.2)
    add_model(models, "knobs", title="Surface defects", predictor=KNOBS_PREDICTOR, example=None)
    add_model(models, "benchmark", title="Benchmark only", listed=False)
    out = base / "dist"
    build.build(out, identity=OWNER, models_dir=models)
    return out


def test_the_portfolio_lists_each_listed_model_and_hides_unlisted_ones(site: Path) -> None:
    index = page(site, "/")
    links = {a["href"] for a in Elements(index).all("a")}

    assert {"/models/digits/", "/models/knobs/"} <= links
    assert "/models/benchmark/" not in links and "Benchmark only" not in index
    assert "ada" in text_of(index)
    card = text_of(index.split('data-model="digits"')[1].split("</li>")[0])
    assert "Handwritten digits" in card and "98.3 %" in card
    assert "Reads one thing from a picture." in card and "Trained on" not in card  # one line
    # An unlisted model keeps its page, for those given the link.
    assert "Benchmark only" in page(site, "/models/benchmark/")


def test_a_model_page_shows_what_was_measured(site: Path) -> None:
    shown = text_of(page(site, "/models/digits/"))

    assert "98.3 %" in shown and "on 360 held-out images" in shown
    assert "3.2 ms" in shown and "CPU" in shown
    assert "$0.0005 / second" in shown


@pytest.mark.parametrize(
    ("price", "latency_ms", "shown"),
    [
        ("0.001005", "1000", "≈ $1.01"),  # exactly half a cent over: up, not to the even $1.00
        ("0.000025", "1000", "≈ $0.03"),  # half-even would say $0.02
        ("0.0201", "50", "≈ $1.01"),  # float says 1.005 -> round() -> 1.0
        ("0.0005", "1.71", "≈ $0.00086"),  # $0.000855 is not free: two significant digits
        ("0.0000001", "1", "≈ $0.00000010"),
        ("0.0005", "10000", "≈ $5.00"),
        ("0.5", "4000", "≈ $2,000.00"),
        ("0", "12", "$0.00"),
    ],
)
def test_the_price_of_1000_predictions_is_rounded_once_half_up_to_the_cent(
    price: str, latency_ms: str, shown: str
) -> None:
    assert build.price_per_1000(Decimal(price), Decimal(latency_ms)) == shown


def test_a_model_page_prices_1000_predictions_at_its_typical_latency(tmp_path: Path) -> None:
    add_model(tmp_path / "models", "halfcent", price="0.0201", latency_ms=50)

    build.build(tmp_path / "dist", identity=OWNER, models_dir=tmp_path / "models")

    shown = text_of(page(tmp_path / "dist", "/models/halfcent/"))
    assert "≈ $1.01 per 1,000 predictions at typical latency (50 ms)" in shown


def test_the_try_it_form_is_rendered_from_the_predictors_schema(site: Path) -> None:
    form = Elements(page(site, "/models/knobs/"))

    widget = form.one("div", data_testid="tryit")
    assert widget["data-model"] == "ada/knobs"
    assert widget["data-fields"] == "image,threshold,top_k,mode,explain,note"
    assert widget["data-file-fields"] == "image"
    assert form.one("div", data_testid="dropzone")["tabindex"] == "0"
    file_input = form.one("input", data_testid="file-input")
    assert file_input["type"] == "file" and file_input["accept"] == "image/*"
    threshold = form.one("input", data_input="threshold")
    assert (threshold["type"], threshold["min"], threshold["max"], threshold["value"]) == (
        "number",
        "0",
        "1",
        "0.5",
    )
    assert threshold["step"] == "any"
    top_k = form.one("input", data_input="top_k")
    assert (top_k["min"], top_k["max"], top_k["step"], top_k["value"]) == ("1", "10", "1", "5")
    assert form.one("select", data_input="mode") is not None
    options = form.all("option")
    assert [o["value"] for o in options] == ["fast", "accurate"]
    assert "selected" in options[1] and "selected" not in options[0]
    explain = form.one("input", data_input="explain")
    assert explain["type"] == "checkbox" and "checked" not in explain
    assert form.one("input", data_input="note")["type"] == "text"
    shown = text_of(page(site, "/models/knobs/"))
    assert "Lowest confidence shown." in shown and "How many classes to return." in shown


def test_the_try_it_widget_has_stable_hooks_and_a_polite_status(site: Path) -> None:
    elements = Elements(page(site, "/models/digits/"))

    status = elements.one("div", data_testid="status")
    assert status["aria-live"] == "polite" and status["role"] == "status"
    testids = {attrs.get("data-testid") for _, attrs in elements.found}
    assert {
        "dropzone",
        "file-input",
        "error",
        "result-label",
        "result-confidence",
        "result-probabilities",
        "preview",
        "run",
        "example",
    } <= testids
    example = elements.one("button", data_testid="example")
    assert json.loads(example["data-input"]) == {"image": "/models/digits/examples/seven.png"}


def test_example_images_are_copied_beside_their_model_page(site: Path) -> None:
    source = site.parent / "models" / "digits" / "examples" / "seven.png"

    copied = site / "models" / "digits" / "examples" / "seven.png"
    assert copied.read_bytes() == source.read_bytes()
    assert '<img src="/models/digits/examples/seven.png"' in page(site, "/models/digits/")


def test_the_api_snippets_call_the_model_as_owner_slash_name(site: Path) -> None:
    elements = page(site, "/models/knobs/")
    python = html.unescape(elements.split('data-testid="snippet-python">')[1].split("</code>")[0])
    curl = html.unescape(elements.split('data-testid="snippet-curl">')[1].split("</code>")[0])

    compile(python, "snippet.py", "exec")
    assert 'api_token=os.environ["MODELFOLIO_API_KEY"]' in python
    # replicate 1.0.7 requests "/v1/..." paths itself: its base_url is the bare origin.
    assert 'base_url="https://models.example.com"' in python
    assert '"ada/knobs"' in python and '"image": open("image.png", "rb")' in python
    assert '"mode": "accurate"' in python and '"explain": False' in python
    assert "https://models.example.com/v1/models/ada/knobs/predictions" in curl
    assert "Authorization: Bearer $MODELFOLIO_API_KEY" in curl


def test_the_curl_snippet_sends_the_example_file_as_a_data_url(site: Path, tmp_path: Path) -> None:
    curl = html.unescape(
        page(site, "/models/digits/").split('data-testid="snippet-curl">')[1].split("</code>")[0]
    )
    example = site / "models" / "digits" / "examples" / "seven.png"
    shutil.copy(example, tmp_path / "seven.png")

    # Run the snippet in bash with a curl that only prints the body it was given.
    sent = subprocess.run(
        ["bash", "-c", "curl() { cat; }\n" + curl],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    image = json.loads(sent)["input"]["image"]
    assert image.startswith("data:image/png;base64,")
    assert base64.b64decode(image.split(",", 1)[1]) == example.read_bytes()


def test_tailwind_ran_and_compiled_only_the_classes_the_site_uses(site: Path) -> None:
    css = (site / "assets" / "site.css").read_text()

    assert "tailwindcss v4" in css
    for used in (".bg-accent", ".sr-only", ".lg\\:grid-cols-5", ".grid-cols-subgrid"):
        assert used in css, used  # the last one is used by tryit.js only
    assert ".bg-fuchsia-900" not in css


def test_pages_load_scripts_from_assets_only_so_a_strict_csp_holds(site: Path) -> None:
    for url in ("/", "/models/digits/", "/models/knobs/"):
        elements = Elements(page(site, url))
        assert all(attrs.get("src", "").startswith("/assets/") for attrs in elements.all("script"))
        assert not any(k.startswith("on") for _, attrs in elements.found for k in attrs), url
        assert elements.one("link", rel="stylesheet")["href"] == "/assets/site.css"
    assert {p.name for p in (site / "assets").iterdir()} >= {"site.css", "tryit.js", "copy.js"}


def test_a_broken_template_leaves_the_previous_site_in_place(tmp_path: Path) -> None:
    add_model(tmp_path / "models", "digits")
    out = tmp_path / "dist"
    build.build(out, identity=OWNER, models_dir=tmp_path / "models")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    broken_site = tmp_path / "site"
    shutil.copytree(build.SITE_DIR, broken_site)
    model_page = broken_site / "templates" / "model.html"
    model_page.write_text(
        model_page.read_text().replace("{% block main %}", "{% block main %}{{ model.no_such_thing }}")
    )

    with pytest.raises(jinja2.UndefinedError):
        build.build(out, identity=OWNER, models_dir=tmp_path / "models", site_dir=broken_site)

    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist", "models", "site"]  # no debris


def test_a_broken_manifest_leaves_the_previous_site_in_place(tmp_path: Path) -> None:
    add_model(tmp_path / "models", "digits")
    out = tmp_path / "dist"
    build.build(out, identity=OWNER, models_dir=tmp_path / "models")
    before = page(out, "/")
    broken = add_model(tmp_path / "models", "broken")
    (broken / "manifest.toml").write_text('description = "no title, no price"\n')

    with pytest.raises(ConfigError, match="missing required key"):
        build.build(out, identity=OWNER, models_dir=tmp_path / "models")

    assert page(out, "/") == before


def test_an_example_file_outside_its_model_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "private.png").write_bytes(b"not for the public")
    add_model(tmp_path / "models", "sneaky", example="../../private.png")

    with pytest.raises(build.BuildError, match="not an image in the model folder"):
        build.build(tmp_path / "dist", identity=OWNER, models_dir=tmp_path / "models")

    assert not (tmp_path / "dist").exists()


def test_nothing_secret_reaches_the_built_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    markers = {
        "INFERENCE_TOKEN": "inference-marker-5f1c9a",
        "STRIPE_SECRET_KEY": "sk_test_marker7d2e4b",
        "STRIPE_WEBHOOK_SECRET": "whsec_marker0a9c3e",
    }
    for name, value in markers.items():
        monkeypatch.setenv(name, value)
    add_model(tmp_path / "models", "digits")

    assert build.main(["--out", str(tmp_path / "dist"), "--models-dir", str(tmp_path / "models")]) == 0

    printed = capsys.readouterr().out
    assert "/models/digits/" in printed and re.search(r"in \d+\.\d\d s", printed)
    for path in (tmp_path / "dist").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for value in markers.values():
                assert value.encode() not in content, path
            assert not re.search(rb"sk_(live|test)_|rk_live_|whsec_|Bearer [A-Za-z0-9_\-.]{12,}", content), (
                path
            )
