"""Reduced precision, a per-model setting: `precision = "bf16"` (or "fp16") in manifest.toml.

With `runtime = "torch"` the server runs the predictor under `torch.autocast`, so a predict.py
needs no change; with `runtime = "onnx"` a precision names a variant of the exported graph
(`int8`: model.int8.onnx, `fp16`: model.fp16.onnx, see ort.py and export.py). Either way a model
runs in reduced precision only when its `[measured]` table says that, for the version being
loaded, its top-1 answers agreed with fp32 PyTorch on at least 99 % of a held-out set (train.py
and `python -m inference export` measure and write it; `agreement()` below is the torch
measurement). Otherwise it runs in fp32 and the server logs why: an owner flipping the setting
never ships answers nobody checked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

RUNTIMES = ("torch", "onnx")
PRECISIONS = {"torch": ("fp32", "bf16", "fp16"), "onnx": ("fp32", "int8", "fp16")}
MIN_AGREEMENT = Decimal("0.99")


def measured_keys(precision: str, runtime: str = "torch") -> tuple[str, str, str]:
    """The `[measured]` keys of a check: agreement, held-out size, and the version it was run on.
    The ONNX variants' keys start with `onnx_`: `onnx_int8_agreement`, ..."""
    prefix = "onnx_" if runtime == "onnx" else ""
    return (
        f"{prefix}{precision}_agreement",
        f"{prefix}{precision}_agreement_size",
        f"{prefix}{precision}_checked_version",
    )


def settle(
    wanted: str, measured: Mapping[str, Any], version: str, *, trust: bool = False, runtime: str = "torch"
) -> tuple[str, str | None]:
    """The precision a model will run in, and why it is not the one asked for (None if it is):
    `wanted` and `measured` are its manifest's `precision` and `[measured]`, `version` the
    version being loaded.

    `trust` (the server's --trust-precision) skips the agreement check, for benchmarks of models
    with random weights, whose near-tied answers no check can pass.
    """
    if wanted == "fp32" or trust:
        return wanted, None
    agreement_key, size_key, version_key = measured_keys(wanted, runtime)
    if agreement_key not in measured:
        how = "python -m inference export measures it" if runtime == "onnx" else "train.py measures it"
        return "fp32", (
            f"{wanted} was asked for, but its agreement with fp32 was never measured "
            f"(no {agreement_key} in [measured]; {how})"
        )
    if measured.get(version_key) != version[:16]:
        return "fp32", (
            f"{wanted} was asked for, but its agreement with fp32 was measured on another "
            "version of the code or weights; measure it again"
        )
    agreement = Decimal(str(measured[agreement_key]))
    if agreement < MIN_AGREEMENT:
        return "fp32", (
            f"{wanted} agreed with fp32 on {agreement:.2%} of {measured.get(size_key, '?')} "
            f"held-out inputs, below the {MIN_AGREEMENT:.0%} it needs"
        )
    return wanted, None


@contextlib.contextmanager
def autocast(precision: str) -> Iterator[None]:
    """Runs the block in `precision`: fp32 as written, bf16/fp16 under torch.autocast on the CPU
    and, where there is one, the GPU, whichever device the predictor put its model on."""
    if precision == "fp32":
        yield
        return
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast("cpu", dtype=dtype))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", dtype=dtype))
        yield


def agreement(
    predict_batch: Callable[[list[dict[str, Any]]], list[Any]],
    batches: Sequence[list[dict[str, Any]]],
    precision: str,
) -> tuple[float, int]:
    """How often `precision` gives the same top-1 answer as fp32: (share, inputs compared).

    The answer is the output's "label" where it has one, else the whole output.
    """
    same = total = 0
    for batch in batches:
        reference = predict_batch(batch)
        with autocast(precision):
            reduced = predict_batch(batch)
        same += sum(_answer(a) == _answer(b) for a, b in zip(reference, reduced, strict=True))
        total += len(batch)
    return (same / total if total else 0.0), total


def _answer(output: Any) -> Any:
    return output.get("label", output) if isinstance(output, dict) else output
