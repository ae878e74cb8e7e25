"""Reads a `.dev.vars` file (dotenv format), as `wrangler dev` does for a Worker's secrets."""

from __future__ import annotations

import re
from pathlib import Path

from proxy.errors import ConfigError

_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def read_dotvars(path: Path) -> dict[str, str]:
    """`KEY=value`, `KEY="value"`, `KEY='value'`, `export KEY=value`, `# comments`.
    Errors name the file and line, never the value (it is a secret)."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ConfigError(f"{path}, line {number}: expected KEY=value")
        key, rest = match.groups()
        try:
            values[key] = _parse_value(rest)
        except ValueError as error:
            raise ConfigError(f"{path}, line {number} ({key}): {error}") from None
    return values


def _parse_value(rest: str) -> str:
    if rest[:1] in ('"', "'"):
        quote = rest[0]
        end = _closing_quote(rest, quote)
        trailing = rest[end + 1 :].strip()
        if trailing and not trailing.startswith("#"):
            raise ValueError("unexpected text after the closing quote")
        body = rest[1:end]
        return _unescape(body) if quote == '"' else body
    # An unquoted value ends at a " #" comment, as in most dotenv readers.
    return re.split(r"\s+#", rest, maxsplit=1)[0].strip()


def _closing_quote(rest: str, quote: str) -> int:
    index = 1
    while index < len(rest):
        if rest[index] == "\\" and quote == '"':
            index += 2
            continue
        if rest[index] == quote:
            return index
        index += 1
    raise ValueError("the quoted value is not closed")


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), body)
