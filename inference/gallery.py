"""`python -m inference.gallery [NAME ...]`: each model's answers to its own examples, recorded.

The model page shows its examples with what the model said about them. Those answers are real:
this command starts the inference server in-process (the same app, precision check and batcher
that serve the API), sends each `[[examples]]` input through `POST .../predictions`, and writes
the outputs to `gallery.json` beside the manifest, with the model's version and a hash of each
example file. `build.py` shows them only while both still match, so a page never shows answers
from other weights; the site build itself needs no torch.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import mimetypes
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference.manifest import MODELS_DIR, Manifest, discover

GALLERY_FILE = "gallery.json"
COMMAND = "python -m inference.gallery"


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def input_digests(manifest: Manifest, example_input: dict[str, Any]) -> dict[str, str]:
    """sha256 of each file an example sends, by field: the record holds only for these bytes."""
    files = {f.name for f in manifest.schema.fields if f.is_file}
    return {
        key: file_digest(manifest.folder / str(value))
        for key, value in sorted(example_input.items())
        if key in files
    }


def is_current(manifest: Manifest, record: Any) -> bool:
    """Whether a gallery.json record was made by this version from these very example files."""
    if not isinstance(record, dict) or record.get("version") != manifest.version:
        return False
    examples = record.get("examples")
    if not isinstance(examples, list) or len(examples) != len(manifest.examples):
        return False
    try:
        return all(
            isinstance(entry, dict)
            and entry.get("input") == example.input
            and entry.get("sha256") == input_digests(manifest, example.input)
            for entry, example in zip(examples, manifest.examples, strict=True)
        )
    except OSError:
        return False


def read_record(manifest: Manifest) -> dict[str, Any] | None:
    path = manifest.folder / GALLERY_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def record(models_dir: Path, names: Sequence[str] = (), *, stale_only: bool = False) -> list[str]:
    """Runs the examples of the named models (all with examples, by default) through the server
    and writes their gallery.json; returns the names written."""
    manifests = [m for m in discover(models_dir) if m.examples and (not names or m.name in names)]
    unknown = sorted(set(names) - {m.name for m in manifests})
    if unknown:
        raise SystemExit(f"no model with examples named {', '.join(unknown)} in {models_dir}")
    if stale_only:
        manifests = [m for m in manifests if not is_current(m, read_record(m))]
    if not manifests:
        return []
    return asyncio.run(_record(models_dir, manifests))


async def _record(models_dir: Path, manifests: list[Manifest]) -> list[str]:
    # Imported here: `is_current` and `read_record` serve build.py, which has no torch.
    import httpx

    from inference.app import create_app
    from inference.config import Settings

    token = secrets.token_urlsafe(24)  # this process's own server; never written anywhere
    # Any handle will do for a server only this command talks to; the site shows the config's.
    settings = Settings(token=token, owner="gallery", models_dir=models_dir)
    app = create_app(settings, load_before_serving=True)
    written = []
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://inference.local",
            headers={"Authorization": f"Bearer {token}"},
            timeout=90,
        ) as client,
    ):
        for manifest in manifests:
            entries = [await _run(client, settings.owner, manifest, e.input) for e in manifest.examples]
            body = {
                "note": f"written by {COMMAND}: the answers the inference server gave to the examples",
                "version": manifest.version,
                "examples": entries,
            }
            (manifest.folder / GALLERY_FILE).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
            written.append(manifest.name)
    return written


async def _run(client: Any, owner: str, manifest: Manifest, example: dict[str, Any]) -> dict[str, Any]:
    files = {f.name for f in manifest.schema.fields if f.is_file}
    sent = {k: _data_url(manifest.folder / str(v)) if k in files else v for k, v in example.items()}
    reply = await client.post(
        f"/v1/models/{owner}/{manifest.name}/predictions",
        json={"input": sent},
        headers={"Prefer": "wait=60"},
    )
    prediction = reply.json()
    if reply.status_code >= 400 or prediction.get("status") != "succeeded":
        detail = prediction.get("error") or prediction.get("detail") or prediction.get("status")
        raise SystemExit(f"{manifest.name}: example {example} did not succeed: {detail}")
    if prediction.get("version") != manifest.version:
        raise SystemExit(f"{manifest.name}: the server ran version {prediction.get('version')}")
    return {
        "input": example,
        "sha256": input_digests(manifest, example),
        "output": prediction["output"],
    }


def _data_url(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="models to record (default: every model with examples)")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--stale-only", action="store_true", help="only models whose record no longer holds")
    args = parser.parse_args(argv)
    written = record(args.models_dir, args.names, stale_only=args.stale_only)
    for name in written:
        print(f"  {name}: {args.models_dir / name / GALLERY_FILE}")
    if not written:
        print("every gallery is current", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
