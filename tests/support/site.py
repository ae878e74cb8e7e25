"""Building the portfolio in tests, and reading what it built."""

from __future__ import annotations

import html
import re
import textwrap
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

import build

OWNER = build.Identity(owner="ada", public_origin="https://models.example.com")


IMAGE_PREDICTOR = """
from inference.predictor import BasePredictor, Image, Input


class Predictor(BasePredictor):
    def predict(self, image: Image = Input(description="One handwritten digit.")) -> dict:
        raise NotImplementedError
"""


def add_model(
    models: Path,
    name: str,
    *,
    title: str | None = None,
    listed: bool = True,
    price: str = "0.0005",
    latency_ms: float = 1.71,
    accuracy: float = 0.983,
    predictor: str = IMAGE_PREDICTOR,
    example: str | None = "examples/seven.png",
) -> Path:
    folder = models / name
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text(predictor)
    examples = ""
    if example:
        (folder / "examples").mkdir()
        Image.new("L", (8, 8), 200).save(folder / "examples" / "seven.png")
        examples = f'[[examples]]\ninput = {{ image = "{example}" }}\nexpected = "7"\n'
    (folder / "manifest.toml").write_text(
        textwrap.dedent(f"""\
        title = "{title or name.title()}"
        description = "Reads one thing from a picture. Trained on data the repo generates."
        price_per_second = "{price}"
        hardware = "cpu"
        listed = {str(listed).lower()}

        [measured]
        accuracy = {accuracy}
        heldout_size = 360
        latency_ms = {latency_ms}

    """)
        + examples
    )
    return folder


class Elements(HTMLParser):
    def __init__(self, page: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))

    def one(self, tag: str, **attrs: str) -> dict[str, str | None]:
        matches = self.all(tag, **attrs)
        assert len(matches) == 1, f"expected one <{tag} {attrs}>, found {len(matches)}"
        return matches[0]

    def all(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [a for t, a in self.found if t == tag and all(a.get(k) == v for k, v in wanted.items())]


def page(site: Path, url: str) -> str:
    return (site / url.strip("/") / "index.html").read_text()


def text_of(markup: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", markup)))
