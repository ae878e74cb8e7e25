"""Fixtures the inference tests share: the tiny `colors` model, exported to ONNX once a session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from inference.export import export
from tests.support.paths import COLORS


@pytest.fixture(scope="session")
def exported_colors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the colors model with its model.onnx and model.int8.onnx, as `python -m
    inference export colors --int8` leaves it. Copy it before changing it."""
    folder = tmp_path_factory.mktemp("exported") / "colors"
    shutil.copytree(COLORS, folder)
    variants = export(folder, int8=True, say=lambda line: None)
    assert all(v.passed for v in variants)
    return folder


@pytest.fixture
def colors(exported_colors: Path, tmp_path: Path) -> Path:
    """A models folder with a fresh copy of the exported colors model, for one test to change."""
    shutil.copytree(exported_colors, tmp_path / "models" / "colors")
    return tmp_path / "models" / "colors"
