"""`python -m inference export`: a model folder's ONNX graphs, each measured against the PyTorch
model on held-out images, and refused below the 99 % gate."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import onnxruntime
import pytest

from inference.errors import ConfigError
from inference.export import OPSET, export
from inference.loader import load
from inference.manifest import load_manifest
from tests.support.paths import COLORS, REPO


def measured(folder: Path) -> dict:
    with (folder / "manifest.toml").open("rb") as f:
        return dict(tomllib.load(f)["measured"])


def test_an_export_writes_both_graphs_with_their_opset_and_agreement_for_this_version(
    exported_colors: Path,
) -> None:
    figures, version = measured(exported_colors), load_manifest(exported_colors).version[:16]
    assert figures["onnx_opset"] == OPSET
    for precision in ("fp32", "int8"):
        assert figures[f"onnx_{precision}_agreement"] >= 0.99
        assert figures[f"onnx_{precision}_agreement_size"] == 200
        assert figures[f"onnx_{precision}_checked_version"] == version
    session = onnxruntime.InferenceSession(str(exported_colors / "model.int8.onnx"))
    assert isinstance(session.get_inputs()[0].shape[0], str)  # a batch of any size
    assert {node.op_type for node in _nodes(exported_colors / "model.int8.onnx")} >= {
        "QuantizeLinear",
        "DequantizeLinear",
    }


def _nodes(path: Path) -> list:
    import onnx

    return list(onnx.load(str(path)).graph.node)


def test_a_variant_below_the_gate_is_refused_with_its_figure_and_never_served(tmp_path: Path) -> None:
    folder = tmp_path / "colors"
    shutil.copytree(COLORS, folder)
    manifest = folder / "manifest.toml"
    # Calibrated on near-black pictures, INT8 has no range left for real ones.
    manifest.write_text(
        manifest.read_text().replace("predict.py:calibration_images", "predict.py:dark_images")
    )
    done = subprocess.run(
        [sys.executable, "-m", "inference", "export", str(folder), "--int8"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    lines = {
        line.split(":")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("colors:")
    }
    assert "passes the 99% gate" in lines["model.onnx (0.01 MB)"]
    refused = lines["model.int8.onnx"]
    assert "REFUSED: below the 99% gate, not written" in refused
    share = float(refused.split("agrees with PyTorch fp32 on ")[1].split("%")[0])
    assert share < 99
    assert (folder / "model.onnx").is_file() and not (folder / "model.int8.onnx").exists()
    figures = measured(folder)
    assert figures["onnx_int8_agreement"] == pytest.approx(share / 100, abs=1e-4)
    assert figures["onnx_int8_checked_version"] == "not written"
    # An owner who asks for it anyway gets fp32.
    manifest.write_text('precision = "int8"\n' + manifest.read_text())
    assert load(load_manifest(folder), "owner").precision == "fp32"


def test_an_export_without_held_out_images_says_what_the_manifest_lacks(tmp_path: Path) -> None:
    folder = tmp_path / "colors"
    shutil.copytree(COLORS, folder)
    manifest = folder / "manifest.toml"
    manifest.write_text(manifest.read_text().replace('heldout = "predict.py:heldout_images"\n', ""))
    with pytest.raises(
        ConfigError, match=r"manifest.toml: \[export\] heldout is missing: name a \"file.py:function\""
    ):
        export(folder, say=lambda line: None)
    assert not (folder / "model.onnx").exists()
