"""A model card's facts, each from a record rather than typed into a template: the examples'
recorded answers (gallery.json), the measured figures over time (the manifest's past versions in
git), and what the owner wrote about limits and licence (`[card]` in manifest.toml)."""

from __future__ import annotations

import subprocess
import tomllib
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from inference.gallery import is_current as gallery_is_current
from inference.gallery import read_record
from inference.manifest import Manifest

CENT = Decimal("0.01")


@dataclass(frozen=True)
class Answer:
    """One class of a recorded answer, formatted once."""

    label: str
    percent: str  # "98.5 %"
    width: str  # "98.5%", the bar's width as CSS


@dataclass(frozen=True)
class GalleryItem:
    src: str  # the example image's URL
    file: Path  # the example image in the model folder
    alt: str
    input: dict[str, Any]  # the example's input, image fields as URLs
    expected: str | None
    answer: str | None  # the model's label, None when no current record exists
    confidence: str | None
    top: list[Answer]
    correct: bool | None


@dataclass(frozen=True)
class Release:
    """A measured version of the model, from the manifest as one commit left it."""

    version: str  # the folder's content hash, first 12 characters
    date: str  # when it was measured
    accuracy: str | None
    latency: str | None
    change: str  # what the commit that recorded it says
    current: bool


@dataclass(frozen=True)
class CardText:
    limitations: tuple[str, ...]
    license: str | None  # the model's own licence, as the owner states it
    data: str | None  # where the training data came from
    data_license: str | None


def price_per_1000(price_per_second: Decimal, latency_ms: Decimal) -> str:
    """The price of 1,000 predictions at `latency_ms` each, rounded once, half-up to the cent.

    Below half a cent, two significant digits instead: "$0.00" would read as free.
    """
    return _dollars(price_per_second * (latency_ms / 1000) * 1000)


def price_per_prediction(price_per_second: Decimal, latency_ms: Decimal) -> str:
    """One prediction at `latency_ms`, rounded once as price_per_1000 rounds."""
    return _dollars(price_per_second * latency_ms / 1000)


def _dollars(exact: Decimal) -> str:
    rounded = exact.quantize(CENT, rounding=ROUND_HALF_UP)
    if exact == 0:
        return "$0.00"
    if rounded == 0:
        step = Decimal(1).scaleb(exact.adjusted() - 1)
        return f"≈ ${exact.quantize(step, rounding=ROUND_HALF_UP):f}"
    return f"≈ ${rounded:,.2f}"


def percent(fraction: Any) -> str | None:
    if fraction is None or isinstance(fraction, bool):
        return None
    value = Decimal(str(fraction))
    if value <= 1:  # a fraction, as train scripts write it
        value *= 100
    return f"{value.quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)} %"


def milliseconds(value: Any) -> str | None:
    if isinstance(value, dict):  # percentiles: the median is the typical latency
        value = value.get("p50", value.get("median"))
    if value is None or isinstance(value, bool):
        return None
    ms = Decimal(str(value))
    step = Decimal("0.1") if ms < 10 else Decimal(1)
    return f"{ms.quantize(step, rounding=ROUND_HALF_UP)} ms"


def gallery_items(manifest: Manifest, examples: list[dict[str, Any]]) -> tuple[list[GalleryItem], bool]:
    """The examples with the model's recorded answers; and whether a record was missing or stale
    (then the examples show without answers: never answers from other weights)."""
    record = read_record(manifest)
    current = gallery_is_current(manifest, record)
    entries = record["examples"] if current and record else [None] * len(examples)
    items = []
    for example, entry in zip(examples, entries, strict=True):
        output = entry.get("output") if isinstance(entry, dict) else None
        label = str(output["label"]) if isinstance(output, dict) and "label" in output else None
        probabilities = output.get("probabilities", []) if isinstance(output, dict) else []
        top = sorted(
            (p for p in probabilities if isinstance(p, dict)), key=lambda p: -float(p.get("probability", 0))
        )[:3]
        expected = example["expected"]
        items.append(
            GalleryItem(
                src=example["src"],
                file=example["path"],
                alt=_alt(manifest, expected),
                input=example["input"],
                expected=expected,
                answer=label,
                confidence=percent(output.get("confidence")) if isinstance(output, dict) else None,
                top=[_answer(p) for p in top],
                correct=None if label is None or expected is None else label == str(expected),
            )
        )
    return items, bool(examples) and not current


def _answer(probability: dict[str, Any]) -> Answer:
    fraction = Decimal(str(probability.get("probability", 0)))
    shown = (fraction * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return Answer(
        str(probability.get("label")), f"{shown} %", f"{max(Decimal(0), min(shown, Decimal(100)))}%"
    )


def _alt(manifest: Manifest, expected: str | None) -> str:
    what = f"showing {expected}" if expected else "from the model's examples"
    return f"Example input for {manifest.title}, {what}"


def card_text(manifest: Manifest) -> CardText:
    with (manifest.folder / "manifest.toml").open("rb") as f:
        card = tomllib.load(f).get("card", {})
    limits = card.get("limitations", [])
    return CardText(
        limitations=tuple(str(item) for item in (limits if isinstance(limits, list) else [limits])),
        license=str(card["license"]) if card.get("license") else None,
        data=str(card["data"]) if card.get("data") else None,
        data_license=str(card["data_license"]) if card.get("data_license") else None,
    )


def releases(manifest: Manifest) -> list[Release]:
    """The measured versions of the model, newest first: the manifest now, then each commit that
    recorded other figures. Outside a git checkout, only the current one."""
    now = _release(manifest.measured, "", current=True)
    past = _from_git(manifest.folder)
    if past and past[0][0] == manifest.measured:
        return [_release(manifest.measured, past[0][1].change, current=True), *(r for _, r in past[1:])]
    return [now, *(r for _, r in past)]


def _release(measured: dict[str, Any], change: str, *, current: bool) -> Release:
    # The training script records which version of the code and weights it measured (the
    # precision check's key); older records without it show no version.
    checked = next((str(v) for k, v in sorted(measured.items()) if k.endswith("_checked_version")), "")
    return Release(
        version=checked[:12],
        date=str(measured.get("measured_on", "")),
        accuracy=percent(measured.get("accuracy")),
        latency=milliseconds(measured.get("latency_ms")),
        change=change,
        current=current,
    )


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _from_git(folder: Path) -> list[tuple[dict[str, Any], Release]]:
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top is None:
        return []
    repo = Path(top.strip())
    relative = f"{folder.resolve().relative_to(repo.resolve()).as_posix()}/manifest.toml"
    log = _git(repo, "log", "--format=%H%x09%cs%x09%s", "--", relative)
    found: list[tuple[dict[str, Any], Release]] = []
    for line in (log or "").splitlines():
        commit, date, subject = line.split("\t", 2)
        try:
            measured = dict(
                tomllib.loads(_git(repo, "show", f"{commit}:{relative}") or "").get("measured", {})
            )
        except tomllib.TOMLDecodeError:
            continue
        if not measured:
            continue
        release = _release({"measured_on": date, **measured}, subject, current=False)
        if found and found[-1][0] == measured:
            found[-1] = (measured, release)  # the same figures: the older commit recorded them
        else:
            found.append((measured, release))
    return found
