"""`python -m inference export <model> [--int8] [--fp16] [--no-gate]`: a model folder's ONNX variants.

Writes `model.onnx` from the folder's own predictor: its `setup()` builds the PyTorch network,
`self.model`, which torch.onnx's exporter (torch.export based) turns into a graph with a dynamic
batch axis, taking a batch of what `preprocess()` makes and giving what `postprocess()` takes.
`--int8` adds `model.int8.onnx`: static quantization with ONNX Runtime's tools, QDQ format,
per-channel weights, calibrated on the images the manifest's `[export] calibration` hook gives.
`--fp16` adds `model.fp16.onnx`, for GPUs only.

Each variant's top-1 answers are compared with the PyTorch model's on the `[export] heldout`
images, and a variant below the gate (99 %, precision.py) is refused: not written, the command
exits 1. The figures go into the manifest's `[measured]` either way, with the opset and the
version they hold for, and the server runs a variant only while they pass for that version.
`--no-gate` writes variants below it anyway: for the benchmarks' random-weight models, whose
near-tied answers no check can pass (the server still refuses them without --trust-precision).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from inference import ort
from inference.errors import ConfigError
from inference.loader import load
from inference.manifest import MODELS_DIR, Manifest, discover, load_manifest
from inference.precision import MIN_AGREEMENT, measured_keys

OPSET = 20  # ONNX Runtime 1.31 runs opsets up to 23; 20 is what torch 2.14's exporter targets
BATCH = 32
CALIBRATION_BATCH = 16


@dataclass
class Variant:
    precision: str
    path: Path
    agreement: float
    size: int
    latency_ms: float
    max_abs_diff: float

    @property
    def passed(self) -> bool:
        return self.agreement >= MIN_AGREEMENT


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference export", description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="a model folder's name under --models-dir, or its path")
    parser.add_argument(
        "--missing",
        action="store_true",
        help="export each model under --models-dir that runs on ONNX Runtime and lacks its graph "
        "(./dev run does, before it serves)",
    )
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx (static, QDQ)")
    parser.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx (needs a GPU)")
    parser.add_argument("--no-gate", action="store_true", help="write variants below the 99 %% gate too")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: every core)")
    args = parser.parse_args(argv)
    if args.missing:
        folders = [
            (m.folder, m.precision == "int8")
            for m in discover(args.models_dir)
            if m.runtime == "onnx" and not m.onnx_file(m.precision).is_file()
        ]
    elif args.model:
        folders = [(Path(args.model) if "/" in args.model else args.models_dir / args.model, args.int8)]
    else:
        parser.error("name a model, or --missing")
    variants = []
    try:
        for folder, int8 in folders:
            variants += export(folder, int8=int8, fp16=args.fp16, gate=not args.no_gate, threads=args.threads)
    except ConfigError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    return 0 if args.no_gate or all(v.passed for v in variants) else 1


def export(
    folder: Path,
    *,
    int8: bool = False,
    fp16: bool = False,
    gate: bool = True,
    threads: int | None = None,
    say: Callable[[str], None] = print,
) -> list[Variant]:
    """Writes the folder's variants and their figures; returns every variant measured."""
    try:
        import torch
    except ImportError:
        raise ConfigError("exporting needs PyTorch: pip install -e '.[inference,onnx,export]'") from None
    manifest = load_manifest(folder)
    predictor: Any = load(replace(manifest, runtime="torch", precision="fp32"), "export").predictor
    network = getattr(predictor, "model", None)
    if not isinstance(network, torch.nn.Module) or not callable(getattr(predictor, "postprocess", None)):
        raise ConfigError(
            f"{manifest.predictor_file}: to export, {manifest.predictor_class}.setup() must set "
            "self.model (the torch.nn.Module to export) and the class must have preprocess() "
            "and postprocess() (what runs before and after the graph)"
        )
    heldout = _items(manifest, predictor, "heldout")
    reference = _torch_outputs(network.eval(), heldout)
    answers = [_answer(predictor.postprocess(*rows)) for rows in zip(*reference, strict=True)]

    with tempfile.TemporaryDirectory(prefix="modelfolio-export-") as tmp:
        staged = Path(tmp)
        _export_graph(torch, network, heldout, staged / "model.onnx")
        results = [_measure("fp32", staged / "model.onnx", predictor, heldout, reference, answers, threads)]
        if int8:
            calibration = _items(manifest, predictor, "calibration")
            _quantize(staged / "model.onnx", staged / "model.int8.onnx", calibration, staged)
            results.append(
                _measure("int8", staged / "model.int8.onnx", predictor, heldout, reference, answers, threads)
            )
        if fp16:
            results += _fp16(staged, predictor, heldout, reference, answers, say)
        kept = [v for v in results if v.passed or not gate]
        if gate and not results[0].passed:
            kept = []  # every other variant comes from the fp32 graph: none is kept without it
        for variant in results:
            target = manifest.onnx_file(variant.precision)
            if variant in kept:
                target.write_bytes(variant.path.read_bytes())
            else:
                target.unlink(missing_ok=True)  # an older variant no longer matches this model
            variant.path = target
    _record(manifest, results, kept)
    for variant in results:
        say(_report(manifest, variant, kept=variant in kept))
    return results


def _items(manifest: Manifest, predictor: Any, which: str) -> list[np.ndarray]:
    """The `[export]` hook's images, as preprocess() makes them for the graph."""
    hook = manifest.export_hooks.get(which)
    if hook is None:
        raise ConfigError(
            f"{manifest.folder / 'manifest.toml'}: [export] {which} is missing: name a "
            f'"file.py:function" in the folder that returns a list of PIL images'
        )
    images = _call_hook(manifest.folder, hook)
    image_fields = [f for f in manifest.schema.fields if f.kind == "image"]
    others = [f.name for f in manifest.schema.fields if f.required and f.kind != "image"]
    if len(image_fields) != 1 or others:
        raise ConfigError(
            f"{manifest.predictor_file}: export measures models with one image input and no other "
            "required input"
        )
    defaults = {f.name: f.default for f in manifest.schema.fields if not f.required}
    items = [predictor.preprocess(**defaults, **{image_fields[0].name: image}) for image in images]
    if not items:
        raise ConfigError(f"{manifest.folder / 'manifest.toml'}: [export] {which} gave no images")
    return items


def _call_hook(folder: Path, hook: str) -> list[Any]:
    file, function = hook.split(":")
    spec = importlib.util.spec_from_file_location(f"modelfolio_export_{folder.name}", folder / file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{folder / file} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(getattr(module, function)())


def _torch_outputs(network: Any, items: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    chunks: list[list[np.ndarray]] = []
    with torch.inference_mode():
        for start in range(0, len(items), BATCH):
            out = network(torch.from_numpy(np.stack(items[start : start + BATCH])))
            outs = out if isinstance(out, tuple | list) else (out,)
            chunks.append([o.float().numpy() for o in outs])
    return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


def _export_graph(torch: Any, network: Any, items: list[np.ndarray], path: Path) -> None:
    sample = torch.from_numpy(np.stack(items[:2] * (2 if len(items) == 1 else 1)))
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        network,
        (sample,),
        str(path),
        dynamo=True,
        external_data=False,  # one file: weights inside, as the server and the version hash expect
        opset_version=OPSET,
        input_names=["input"],
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


def _quantize(source: Path, target: Path, items: list[np.ndarray], tmp: Path) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(
                [
                    {"input": np.stack(items[s : s + CALIBRATION_BATCH])}
                    for s in range(0, len(items), CALIBRATION_BATCH)
                ]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    # Folded and shape-inferred first, as ORT's quantization guide asks; its symbolic shape
    # inference cannot follow torch.export's graphs (reductions with axes as inputs), ONNX's can.
    prepared = tmp / "prepared.onnx"
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(target),
        Batches(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        # u8 activations and s8 weights: ORT's choice for x86 with VNNI (this machine has it);
        # without VNNI, 8-bit products can saturate: export there with reduce_range.
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


def _fp16(
    tmp: Path,
    predictor: Any,
    heldout: list[np.ndarray],
    reference: list[np.ndarray],
    answers: list[Any],
    say: Callable[[str], None],
) -> list[Variant]:
    import onnxruntime

    if not ort._on_gpu(onnxruntime.get_available_providers()):
        say(
            "fp16: not exported: it runs on a GPU and is measured on the GPU it will run on; this "
            "onnxruntime has no CUDA or TensorRT provider (install the onnx-gpu extra there)"
        )
        return []
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(onnx.load(str(tmp / "model.onnx")), keep_io_types=True)
    onnx.save(half, str(tmp / "model.fp16.onnx"))
    return [_measure("fp16", tmp / "model.fp16.onnx", predictor, heldout, reference, answers, None, gpu=True)]


def _measure(
    precision: str,
    path: Path,
    predictor: Any,
    items: list[np.ndarray],
    reference: list[np.ndarray],
    answers: list[Any],
    threads: int | None,
    *,
    gpu: bool = False,
) -> Variant:
    """The variant's top-1 agreement with PyTorch fp32 on `items`, its largest difference in
    raw outputs, and its latency for one item."""
    import onnxruntime

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
    session = onnxruntime.InferenceSession(str(path), ort.session_options(threads), providers=providers)
    name = session.get_inputs()[0].name
    chunks = [session.run(None, {name: np.stack(items[s : s + BATCH])}) for s in range(0, len(items), BATCH)]
    outputs = [np.concatenate(parts) for parts in zip(*chunks, strict=True)]
    got = [_answer(predictor.postprocess(*rows)) for rows in zip(*outputs, strict=True)]
    same = sum(a == b for a, b in zip(got, answers, strict=True))
    diff = max(float(np.abs(o.astype(np.float32) - r).max()) for o, r in zip(outputs, reference, strict=True))
    one = {name: items[0][None]}
    session.run(None, one)
    times = []
    for _ in range(50):
        started = time.perf_counter()
        session.run(None, one)
        times.append(time.perf_counter() - started)
    return Variant(precision, path, same / len(items), len(items), statistics.median(times) * 1000, diff)


def _record(manifest: Manifest, results: list[Variant], kept: list[Variant]) -> None:
    """The figures, in `[measured]`, beside what train.py wrote there."""
    from inference.models._training import earlier_measured, today, write_measured

    version = load_manifest(manifest.folder).version[:16]  # with the files just written
    measured = earlier_measured(manifest.folder / "manifest.toml")
    measured["onnx_opset"] = OPSET
    for variant in results:
        agreement_key, size_key, version_key = measured_keys(variant.precision, "onnx")
        measured[agreement_key] = int(variant.agreement * 10_000) / 10_000  # never rounded up past 99 %
        measured[size_key] = variant.size
        measured[version_key] = version if variant in kept else "not written"
        measured[f"onnx_{variant.precision}_latency_ms"] = round(variant.latency_ms, 3)
    measured["onnx_exported_on"] = today()
    write_measured(manifest.folder / "manifest.toml", measured)


def _report(manifest: Manifest, variant: Variant, *, kept: bool) -> str:
    figure = (
        f"{variant.precision} agrees with PyTorch fp32 on {variant.agreement:.2%} of {variant.size} "
        f"held-out inputs (largest output difference {variant.max_abs_diff:.2g}); "
        f"{variant.latency_ms:.2f} ms for one"
    )
    if variant.passed:
        verdict = f"passes the {MIN_AGREEMENT:.0%} gate"
    elif kept:
        verdict = f"below the {MIN_AGREEMENT:.0%} gate, written anyway (--no-gate)"
    else:
        verdict = f"REFUSED: below the {MIN_AGREEMENT:.0%} gate, not written"
    where = f"{variant.path.name} ({variant.path.stat().st_size / 1e6:.2f} MB)" if kept else variant.path.name
    return f"{manifest.name}: {where}: {figure}: {verdict}"


def _answer(output: Any) -> Any:
    return output.get("label", output) if isinstance(output, dict) else output
