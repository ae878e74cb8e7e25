"""Reduced precision as a per-model setting: a model runs in bf16 only where its manifest asks for
it and a measured check says its answers agree with fp32; otherwise it runs in fp32 and says why."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from inference.errors import ConfigError
from inference.loader import LoadedModel, load
from inference.manifest import load_manifest
from tests.support.models import load_predictor, open_image
from tests.support.paths import DATA, MODELS_DIR

MATMUL = """
import torch

from inference.predictor import BasePredictor


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.weights = torch.ones(4, 4)

    def predict(self, n: int = 1) -> dict:
        return {"dtype": str((torch.ones(n, 4) @ self.weights).dtype)}
"""


def load_tiny(tmp_path: Path, manifest_lines: str, *, trust: bool = False) -> LoadedModel:
    """A model whose answer is the dtype its matrix product ran in; `manifest_lines` may name a
    `{version}` to stand for the version being loaded."""
    folder = tmp_path / "tiny"
    folder.mkdir(exist_ok=True)
    (folder / "predict.py").write_text(MATMUL)
    (folder / "manifest.toml").write_text('title = "Tiny"\nprice_per_second = "0.001"\n')
    version = load_manifest(folder).version[:16]
    (folder / "manifest.toml").write_text(
        'title = "Tiny"\nprice_per_second = "0.001"\n' + manifest_lines.replace("{version}", version)
    )
    return load(load_manifest(folder), "owner", trust_precision=trust)


def dtype_of(model: LoadedModel) -> str:
    [(output, _)] = model.run([{"n": 1}])
    return str(output["dtype"])


def test_a_checked_model_runs_in_bf16(tmp_path: Path) -> None:
    model = load_tiny(
        tmp_path,
        'precision = "bf16"\n[measured]\nbf16_agreement = 0.995\n'
        'bf16_agreement_size = 200\nbf16_checked_version = "{version}"\n',
    )
    assert model.precision == "bf16"
    assert dtype_of(model) == "torch.bfloat16"


def test_a_model_runs_in_fp32_unless_its_manifest_asks(tmp_path: Path) -> None:
    model = load_tiny(tmp_path, "")
    assert model.precision == "fp32"
    assert dtype_of(model) == "torch.float32"


@pytest.mark.parametrize(
    ("measured", "reason"),
    [
        ("", "never measured"),
        (
            'bf16_agreement = 0.985\nbf16_agreement_size = 600\nbf16_checked_version = "{version}"\n',
            "agreed with fp32 on 98.50% of 600 held-out inputs, below the 99%",
        ),
        (
            'bf16_agreement = 1.0\nbf16_agreement_size = 600\nbf16_checked_version = "0123456789abcdef"\n',
            "measured on another version",
        ),
    ],
    ids=["unmeasured", "disagrees", "other-version"],
)
def test_bf16_without_a_passing_check_runs_in_fp32_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, measured: str, reason: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="inference"):
        model = load_tiny(tmp_path, f'precision = "bf16"\n[measured]\n{measured}')
    assert model.precision == "fp32"
    assert dtype_of(model) == "torch.float32"
    assert any(
        reason in record.getMessage() and "tiny runs in fp32" in record.getMessage()
        for record in caplog.records
    )


def test_trusting_the_manifest_skips_the_check(tmp_path: Path) -> None:
    model = load_tiny(tmp_path, 'precision = "bf16"\n', trust=True)
    assert dtype_of(model) == "torch.bfloat16"


def test_an_unknown_precision_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"precision 'int4' is not one of fp32, bf16, fp16 \(runtime torch\)"
    ):
        load_tiny(tmp_path, 'precision = "int4"\n')


def test_the_defect_model_on_pytorch_passes_its_bf16_check_and_answers_as_in_fp32() -> None:
    # It ships on ONNX Runtime (test_onnx.py); its PyTorch runtime stays measured for bf16.
    manifest = replace(load_manifest(MODELS_DIR / "defects"), runtime="torch", precision="bf16")
    model = load(manifest, "owner")
    assert model.precision == "bf16"
    pictures = [{"image": open_image(path)} for path in sorted((DATA / "defects").glob("*.png"))]
    in_bf16 = [output for output, _ in model.run([model.prepare(p) for p in pictures])]
    in_fp32 = load_predictor(manifest).predict_batch(pictures)
    assert [o["label"] for o in in_bf16] == [o["label"] for o in in_fp32]
    assert [o["confidence"] for o in in_bf16] != [o["confidence"] for o in in_fp32]  # it did run in bf16


def test_the_digit_model_stays_in_fp32_by_its_owners_choice() -> None:
    manifest = load_manifest(MODELS_DIR / "digits")
    assert manifest.precision == "fp32"
    assert manifest.measured["bf16_checked_version"] == manifest.version[:16]
    assert manifest.measured["bf16_agreement"] >= 0.99  # measured all the same, for the owner to decide
