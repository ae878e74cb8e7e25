"""What the built portfolio shows besides the try-it widget, readable without JavaScript: the
examples with the answers the model really gave, a model card whose figures come from the
training script's records, share previews with a cover picture, and what crawlers read."""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image

import build
from inference.manifest import load_manifest
from tests.support.site import OWNER, Elements, add_model, page, text_of

CARD = """
[card]
data = "Sevens drawn by the test."
data_license = "CC0"
license = "MIT"
limitations = ["Reads sevens only.", "Needs dark ink."]
"""


def record_gallery(folder: Path, label: str = "7", confidence: float = 0.9312) -> None:
    """A gallery.json as `python -m inference.gallery` writes it, for the folder as it is now."""
    manifest = load_manifest(folder)
    image = folder / "examples" / "seven.png"
    entry = {
        "input": {"image": "examples/seven.png"},
        "sha256": {"image": hashlib.sha256(image.read_bytes()).hexdigest()},
        "output": {
            "label": label,
            "confidence": confidence,
            "probabilities": [
                {"label": label, "probability": confidence},
                {"label": "1", "probability": 0.0601},
                {"label": "4", "probability": 0.0087},
            ],
        },
    }
    record = {"version": manifest.version, "examples": [entry]}
    (folder / "gallery.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("portfolio")
    models = base / "models"
    digits = add_model(models, "digits", title="Handwritten digits", accuracy=0.9778, latency_ms=1.12)
    with (digits / "manifest.toml").open("a") as manifest:
        manifest.write(CARD)
    record_gallery(digits)
    add_model(models, "hidden", title="Hidden model", listed=False)
    out = base / "dist"
    build.build(out, identity=OWNER, models_dir=models)
    return out


def meta(markup: str) -> dict[str, str]:
    elements = Elements(markup)
    found = {}
    for attrs in elements.all("meta"):
        key = attrs.get("property") or attrs.get("name")
        if key and attrs.get("content") is not None:
            found[key] = str(attrs["content"])
    return found


def test_each_example_shows_the_answer_the_model_recorded_for_it(site: Path) -> None:
    shown = text_of(page(site, "/models/digits/"))

    assert "The model said 7 93.1 %" in shown and "Right: 7" in shown
    assert "1 6.0 %" in shown  # the runner-up, from the same record


def test_a_stale_record_shows_the_examples_without_answers_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = add_model(tmp_path / "models", "digits")
    record_gallery(folder, label="1")
    (folder / "predict.py").write_text((folder / "predict.py").read_text() + "\n# new weights\n")

    build.build(tmp_path / "dist", identity=OWNER, models_dir=tmp_path / "models")

    shown = text_of(page(tmp_path / "dist", "/models/digits/"))
    assert "The model said" not in shown and "have not been recorded for this version" in shown
    assert "python -m inference.gallery digits" in capsys.readouterr().err


def test_covers_are_drawn_from_the_models_own_examples(site: Path) -> None:
    with Image.open(site / "models" / "digits" / "cover.jpg") as cover:
        assert cover.size == (1200, 630)
    with Image.open(site / "cover.jpg") as cover:
        assert cover.size == (1200, 630)
    art = Elements(page(site, "/models/digits/")).one("img", data_testid="model-art")
    assert art["src"] == "/models/digits/art.webp" and (site / "models" / "digits" / "art.webp").is_file()
    assert art["alt"] == "1 example picture for Handwritten digits, with the model's answers: 7 (93.1 %)"
    card = Elements(page(site, "/")).one("img", data_testid="card-art")
    assert card["alt"] == art["alt"] and card["width"] and card["height"]


def test_share_previews_name_the_page_and_show_its_cover(site: Path) -> None:
    model = meta(page(site, "/models/digits/"))
    index = meta(page(site, "/"))

    assert model["og:image"] == "https://models.example.com/models/digits/cover.jpg"
    assert model["twitter:image"] == model["og:image"] and model["twitter:card"] == "summary_large_image"
    assert model["og:url"] == "https://models.example.com/models/digits/"
    assert model["og:title"].startswith("Handwritten digits") and model["og:image:alt"]
    assert model["og:description"] == "Reads one thing from a picture."
    assert index["og:image"] == "https://models.example.com/cover.jpg"
    assert "robots" not in model
    assert meta(page(site, "/models/hidden/"))["robots"] == "noindex"


def test_crawlers_get_a_sitemap_of_listed_pages_and_robots_rules(site: Path) -> None:
    sitemap = (site / "sitemap.xml").read_text()
    robots = (site / "robots.txt").read_text()

    assert re.findall(r"<loc>(.*?)</loc>", sitemap) == [
        "https://models.example.com/",
        "https://models.example.com/models/digits/",
    ]
    assert "Sitemap: https://models.example.com/sitemap.xml" in robots
    assert "Disallow: /v1/" in robots


def test_browsers_find_their_icons(site: Path) -> None:
    links = {
        a["rel"]: a["href"] for a in Elements(page(site, "/")).all("link") if a.get("rel") != "stylesheet"
    }

    assert links["apple-touch-icon"] == "/apple-touch-icon.png"
    with Image.open(site / "favicon.ico") as icon:
        assert icon.format == "ICO"
    with Image.open(site / "apple-touch-icon.png") as touch:
        assert touch.size == (180, 180)


def test_the_model_card_takes_its_figures_from_the_records(site: Path) -> None:
    card = text_of(page(site, "/models/digits/").split('data-testid="model-card"')[1].split('id="api"')[0])

    assert "97.8 % on 360 held-out images" in card
    assert "1.1 ms" in card
    assert "CPU, fp32" in card  # the precision the server will run, not merely the one asked for
    # $0.0005/s x 1.12 ms = $0.00000056 a prediction, two significant digits below a cent
    assert "≈ $0.00000056 at 1.1 ms" in card
    assert "Reads sevens only." in card and "Needs dark ink." in card
    assert "Model: MIT" in card and "Training data: CC0" in card
    assert "Sevens drawn by the test." in card
    # Outside a git checkout the history is the version serving now.
    assert "serving now" in card and "97.8 % accuracy · 1.1 ms" in card


def test_a_card_without_a_licence_says_so_rather_than_guess(site: Path) -> None:
    card = text_of(page(site, "/models/hidden/").split('data-testid="model-card"')[1])

    assert "Model: not declared by the owner yet" in card
    assert "has not described its limitations yet" in card


@pytest.mark.parametrize(
    ("price", "latency_ms", "shown"),
    [("0.0005", "1.12", "≈ $0.00000056"), ("0.5", "2000", "≈ $1.00"), ("0.01", "1005", "≈ $0.01")],
)
def test_the_price_of_one_prediction_is_rounded_once(price: str, latency_ms: str, shown: str) -> None:
    assert build.price_per_prediction(Decimal(price), Decimal(latency_ms)) == shown
