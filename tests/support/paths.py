"""Where the tests find the repository's files: one definition of each path."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
DATA = TESTS / "data"  # held-out pictures, never trained on
DIGITS = DATA / "digits"
FIXTURES = TESTS / "fixtures"  # tiny model folders, one behaviour each
COLORS = FIXTURES / "onnx_models" / "colors"  # a tiny torch network the ONNX tests export themselves
MODELS_DIR = REPO / "inference" / "models"  # the shipped models
