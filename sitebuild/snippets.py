"""The API snippets on a model page: curl and the official Python client, calling the model with
its first example's file (which visitors can download from the page) and the other defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inference.manifest import Manifest

MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
}


class FileName(str):
    """A file input in a code snippet: read from this file, not sent as a string."""


def sample_input(manifest: Manifest, examples: list[dict[str, Any]]) -> dict[str, Any]:
    """File fields get a file name (the first example's), the other fields their defaults."""
    first = next((e for e in examples if e["file"]), None)
    sample: dict[str, Any] = {}
    for field in manifest.schema.fields:
        if field.is_file:
            given = first["input"].get(field.name) if first else None
            sample[field.name] = FileName(given.rsplit("/", 1)[-1] if given else f"{field.name}.png")
        elif not field.required:
            sample[field.name] = field.default
        elif field.choices:
            sample[field.name] = field.choices[0]
        else:
            sample[field.name] = {"integer": 1, "number": 1.0, "boolean": False}.get(field.kind, "")
    return sample


def curl_snippet(address: str, origin: str, sample: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, FileName):
            mime = MIME.get(Path(v).suffix.lower(), "application/octet-stream")
            return f"\"data:{mime};base64,$(base64 < {_shell_word(v)} | tr -d '\\n')\""
        # the body is an unquoted heredoc: keep $, ` and \ in values literal
        return json.dumps(v).replace("\\", "\\\\").replace("$", "\\$").replace("`", "\\`")

    body = ", ".join(f"{json.dumps(k)}: {value(v)}" for k, v in sample.items())
    return "\n".join(
        [
            f"curl -sS {origin}/v1/models/{address}/predictions \\",
            '  -H "Authorization: Bearer $MODELFOLIO_API_KEY" \\',
            '  -H "Content-Type: application/json" \\',
            '  -H "Prefer: wait" \\',
            "  -d @- <<EOF",
            f'{{"input": {{{body}}}}}',
            "EOF",
        ]
    )


def python_snippet(address: str, origin: str, sample: dict[str, Any]) -> str:
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
