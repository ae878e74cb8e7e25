"""Pictures the tests drop: held-out handwritten digits the model never trained on."""

from __future__ import annotations

from pathlib import Path

from tests.support.paths import DIGITS


def heldout_digit() -> tuple[Path, str]:
    path = min(DIGITS.glob("*.png"))
    return path, path.stem.rsplit("-", 1)[1]
