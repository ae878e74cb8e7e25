"""ONNX Runtime: a model folder with `runtime = "onnx"` is served from its exported graph, and the
server process never imports torch for it.

The folder keeps one predictor contract: its `predict.py` still declares the inputs (`predict`'s
signature is the schema), and its Predictor's `preprocess(**inputs) -> numpy array` and
`postprocess(*output_rows) -> output` run around the graph, in numpy and Pillow. The graph takes
one input whose first axis is the batch; `postprocess` gets one row of each of the graph's
outputs. `setup()` is not called: loading weights is the graph's job.

Which graph runs: `model.onnx` (fp32), or with `precision = "int8"` / `"fp16"` the variant that
`python -m inference export` wrote and measured, where the measurement passed the gate for this
very version (precision.py); otherwise model.onnx, and the log says why.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from inference.errors import ConfigError
from inference.manifest import Manifest
from inference.precision import settle
from inference.predictor import BasePredictor

log = logging.getLogger("inference")

# Session settings, measured on the 2-core CPU with ResNet-18 (benchmarks/README.md, "ONNX Runtime
# sessions"). The arena and memory patterns reuse a batch's activation buffers from one run to the
# next: the same CPU time per run, the fastest batches of 8 about 15 % faster, 10-35 MB more RSS.
CPU_MEM_ARENA = True
MEM_PATTERN = True
# ORT's pool threads spin after each run, waiting for more work: 60-90 % more CPU per batch of 1,
# taken on two cores from the threads decoding the next requests' images.
ALLOW_SPINNING = False
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True)
class Graph:
    """What the folder's predictor feeds: the graph's one input, by name, shape and type."""

    path: Path
    input: str
    item_shape: tuple[int | str | None, ...]  # without the batch axis; a str or None is free
    dtype: np.dtype[Any]
    outputs: tuple[str, ...]

    def check(self, item: Any) -> np.ndarray:
        """`item` as the graph takes it, or a ConfigError naming the file and the difference."""
        if not isinstance(item, np.ndarray):
            raise ConfigError(
                f"{self.path.name}: preprocess() must return a numpy array for the graph, got "
                f"{type(item).__name__}"
            )
        fixed = all(
            isinstance(d, str | None) or d == n for d, n in zip(self.item_shape, item.shape, strict=False)
        )
        if len(item.shape) != len(self.item_shape) or not fixed or item.dtype != self.dtype:
            raise ConfigError(
                f"{self.path}: the graph takes inputs of shape {_shown(self.item_shape)} "
                f"{self.dtype} per item (after the batch axis), but preprocess() made "
                f"{_shown(item.shape)} {item.dtype}; export the graph again from this predictor"
            )
        return item


class OnnxPredictor(BasePredictor):
    """What LoadedModel runs for an ONNX model: the folder's own preprocess and postprocess
    around one ONNX Runtime session."""

    def __init__(self, predictor: Any, session: ort.InferenceSession, graph: Graph) -> None:
        self._predictor = predictor
        self.session = session
        self.graph = graph
        # IO binding, on a GPU: the batch is copied to the device once, by ORT, and outputs are
        # bound to host memory, so nothing is copied twice. On the CPU, run() already wraps the
        # numpy buffer without a copy: a binding per call measured the same CPU time (within 1 %).
        self._bind = session.get_providers()[0] in GPU_PROVIDERS

    def setup(self) -> None:
        pass

    def preprocess(self, **inputs: Any) -> np.ndarray:
        return self.graph.check(self._predictor.preprocess(**inputs))

    def predict_prepared(self, items: Sequence[np.ndarray]) -> list[Any]:
        outputs = self._run(np.stack(items))
        return [self._predictor.postprocess(*rows) for rows in zip(*outputs, strict=True)]

    def predict(self, **inputs: Any) -> Any:
        return self.predict_prepared([self.preprocess(**inputs)])[0]

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        if not self._bind:
            return list(self.session.run(None, {self.graph.input: batch}))
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.graph.input, batch)
        for name in self.graph.outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())


def wrap(
    manifest: Manifest, predictor: Any, *, threads: int | None, trust_precision: bool
) -> tuple[OnnxPredictor, str]:
    """The folder's predictor (constructed, never set up) served from its graph; returns it and
    the precision it runs in."""
    for method in ("preprocess", "postprocess"):
        if not callable(getattr(predictor, method, None)):
            raise ConfigError(
                f'{manifest.predictor_file}: runtime = "onnx" needs {manifest.predictor_class}.'
                f"{method}(): the graph runs between preprocess() and postprocess()"
            )
    precision = _precision(manifest, trust_precision)
    session, graph = open_session(manifest.onnx_file(precision), precision, manifest, threads)
    if precision == "fp16" and session.get_providers()[0] not in GPU_PROVIDERS:
        # onnxruntime-gpu lists its GPU providers on a machine without a GPU too; ORT then fell
        # back to the CPU, where the fp16 graph has no business running.
        log.warning("%s runs in fp32: ONNX Runtime found no GPU to run fp16 on", manifest.name)
        precision = "fp32"
        session, graph = open_session(manifest.onnx_file(precision), precision, manifest, threads)
    log.info(
        "onnx session",
        extra={
            "fields": {
                "model": manifest.name,
                "graph": graph.path.name,
                "providers": session.get_providers(),
                "intra_op_threads": _threads(threads),
            }
        },
    )
    return OnnxPredictor(predictor, session, graph), precision


def _precision(manifest: Manifest, trust: bool) -> str:
    precision, refused = settle(
        manifest.precision, manifest.measured, manifest.version, trust=trust, runtime="onnx"
    )
    graph = manifest.onnx_file(precision)
    if precision != "fp32" and not graph.is_file():
        refused = f"{graph.name} does not exist (python -m inference export {manifest.name} --{precision})"
        precision = "fp32"
    if precision == "fp16" and not _on_gpu(ort.get_available_providers()):
        precision, refused = "fp32", "fp16 runs on a GPU, and this onnxruntime has no GPU provider"
    if refused:
        log.warning("%s runs in fp32: %s", manifest.name, refused)
    return precision


def open_session(
    path: Path, precision: str, manifest: Manifest, threads: int | None
) -> tuple[ort.InferenceSession, Graph]:
    """A tuned session for the graph at `path`; a ConfigError that names the file when it is
    missing, not a graph ONNX Runtime can run, or not shaped for batches of this model."""
    if not path.is_file():
        raise ConfigError(
            f'{path} does not exist: runtime = "onnx" serves it '
            f"(python -m inference export {manifest.name} writes it)"
        )
    available = ort.get_available_providers()
    options = session_options(threads)
    try:
        if _on_gpu(available):
            # TensorRT's batch profile needs the input's shape first: read it from a bare session.
            bare = ort.SessionOptions()
            bare.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            graph = _graph_of(path, ort.InferenceSession(str(path), bare, providers=["CPUExecutionProvider"]))
            providers = providers_for(precision, available, graph, manifest)
            session = ort.InferenceSession(str(path), options, providers=providers)
        else:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            graph = _graph_of(path, session)
    except ConfigError:
        raise
    except Exception as exc:  # ORT's own error classes (InvalidProtobuf, Fail, ...) are not exported
        raise ConfigError(f"{path} is not a graph ONNX Runtime can load: {_first_line(exc)}") from None
    batch = session.get_inputs()[0].shape[0]
    if isinstance(batch, int) and batch < manifest.max_batch_size:
        raise ConfigError(
            f"{path} takes batches of exactly {batch}, but [batching] max_batch_size is "
            f"{manifest.max_batch_size}: export it with a dynamic batch axis "
            f"(python -m inference export {manifest.name})"
        )
    return session, graph


def _graph_of(path: Path, session: ort.InferenceSession) -> Graph:
    inputs = session.get_inputs()
    if len(inputs) != 1 or not inputs[0].shape:
        shown = ", ".join(f"{i.name} {_shown(tuple(i.shape))}" for i in inputs)
        raise ConfigError(f"{path} must take one input with a batch axis first; it takes {shown or 'none'}")
    dtype = _DTYPES.get(inputs[0].type)
    if dtype is None:
        raise ConfigError(f"{path}: its input {inputs[0].name} is a {inputs[0].type}, not a numeric tensor")
    return Graph(
        path,
        inputs[0].name,
        tuple(inputs[0].shape[1:]),
        np.dtype(dtype),
        tuple(o.name for o in session.get_outputs()),
    )


def session_options(threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = _threads(threads)
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = CPU_MEM_ARENA
    options.enable_mem_pattern = MEM_PATTERN
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if ALLOW_SPINNING else "0")
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise
    return options


def providers_for(precision: str, available: Sequence[str], graph: Graph, manifest: Manifest) -> list[Any]:
    """TensorRT, then CUDA, then the CPU, each where this onnxruntime build has it (the
    `onnx-gpu` extra's onnxruntime-gpu wheel). ONNX Runtime hands TensorRT the parts of the graph
    it can build engines for, CUDA the rest; if TensorRT's libraries are missing it falls back to
    CUDA and the CPU by itself. Written from ONNX Runtime's documentation: not run on a GPU here."""
    chosen: list[Any] = []
    if "TensorrtExecutionProvider" in available:
        cache = Path(tempfile.gettempdir()) / "modelfolio-trt" / f"{manifest.name}-{manifest.version[:16]}"
        cache.mkdir(parents=True, exist_ok=True)
        trt: dict[str, Any] = {
            "device_id": 0,
            "trt_fp16_enable": precision == "fp16",
            "trt_int8_enable": precision == "int8",  # the QDQ graph's own scales: no calibration table
            # Engines take minutes to build: kept per version, so a restart reuses them.
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
        }
        if all(isinstance(d, int) for d in graph.item_shape):
            # One engine for every batch size the batcher sends, tuned for a full batch.
            dims = "x".join(str(d) for d in graph.item_shape)
            trt["trt_profile_min_shapes"] = f"{graph.input}:1x{dims}"
            trt["trt_profile_opt_shapes"] = f"{graph.input}:{manifest.max_batch_size}x{dims}"
            trt["trt_profile_max_shapes"] = f"{graph.input}:{manifest.max_batch_size}x{dims}"
        chosen.append(("TensorrtExecutionProvider", trt))
    if "CUDAExecutionProvider" in available:
        chosen.append(
            (
                "CUDAExecutionProvider",
                {"device_id": 0, "cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True},
            )
        )
    chosen.append("CPUExecutionProvider")
    return chosen


def _on_gpu(available: Sequence[str]) -> bool:
    return any(p in available for p in GPU_PROVIDERS)


def _threads(threads: int | None) -> int:
    """Intra-op threads: the server's --threads, else every core this process may run on."""
    return threads or len(os.sched_getaffinity(0))


def _shown(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("batch" if d is None else str(d) for d in shape) + ")"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
