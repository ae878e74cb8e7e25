"""How to start each server under test, and what request it takes."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from benchmarks.load import Target

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "benchmarks" / "models"
DEPS = ROOT / "benchmarks" / ".deps"
# What each optional competitor is installed from; each goes into its own --target folder under
# .deps so the project's venv is never changed.
OPTIONAL = {"cog": "cog==0.23.1", "litserve": "litserve==0.2.19"}
# The ONNX rows' graphs: exported once per version of the code that makes them, kept here.
EXPORTS = DEPS / "onnx"


@dataclass(frozen=True)
class Spec:
    name: str
    argv: list[str]
    env: dict[str, str]
    target: Target
    note: str


def base_env(threads: int, extra_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        BENCH_THREADS=str(threads),
        PYTHONUNBUFFERED="1",
    )
    # Cog's worker runs `python` from PATH: make that this venv's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (extra_path, ROOT) if p)
    return env


def available(package: str, install: bool) -> Path | None:
    """The --target folder holding `package` (installed on first use), or None."""
    folder = DEPS / package
    if (folder / package).is_dir():
        return folder
    if not install:
        return None
    print(f"{package}: installing {OPTIONAL[package]} into {folder.relative_to(ROOT)} ...", flush=True)
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(folder), OPTIONAL[package]],
            check=True,
            timeout=300,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"{package}: install failed ({exc})")
        return None
    return folder if (folder / package).is_dir() else None


def exported(model: str, threads: int) -> Path:
    """A copy of the model's folder with model.onnx and model.int8.onnx, made by `python -m
    inference export --int8 --no-gate` (random weights cannot pass the gate; their agreement with
    PyTorch is in the copy's [measured]) and kept until the code that makes them changes."""
    sources = sorted(p for p in (MODELS / model).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    sources += [ROOT / "benchmarks" / f for f in ("resnet.py", "imagenet.py")] + [
        ROOT / "inference" / "export.py"
    ]
    key = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    folder = EXPORTS / f"{model}-{key}"
    if not (folder / "model.int8.onnx").is_file():
        partial = EXPORTS / f"{model}-{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(MODELS / model, partial, ignore=shutil.ignore_patterns("__pycache__"))
        print(f"{model}: exporting to ONNX (fp32 and int8) into {folder.relative_to(ROOT)} ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "inference", "export", str(partial), "--int8", "--no-gate"],
            check=True,
            env=base_env(threads),
            cwd=ROOT,
            timeout=1800,
        )
        partial.rename(folder)
    return folder


def agreement_of(folder: Path, precision: str) -> float:
    with (folder / "manifest.toml").open("rb") as f:
        return float(tomllib.load(f)["measured"][f"onnx_{precision}_agreement"])


def spec(
    server: str, model: str, port: int, threads: int, image_url: str, workdir: Path, install: bool
) -> Spec | None:
    body = json.dumps({"input": {"image": image_url}}).encode()
    json_type = {"content-type": "application/json"}
    predictions = f"http://127.0.0.1:{port}/v1/models/modelfolio/{model}/predictions"
    py = sys.executable
    if server in ("ours", "ours-bf16", "ours-onnx", "ours-onnx-int8"):
        token = secrets.token_urlsafe(16)
        # Only the model under test, so cold start and RSS are not those of two models.
        models_dir = workdir / f"models-{model}-{server}"
        models_dir.mkdir(exist_ok=True)
        argv = [
            py,
            "-m",
            "inference",
            "--models-dir",
            str(models_dir),
            "--port",
            str(port),
            "--threads",
            str(threads),
        ]
        if server == "ours":
            if not (models_dir / model).exists():
                (models_dir / model).symlink_to(MODELS / model)
            note = "inference/ server, greedy batching, Prefer: wait"
        elif server.startswith("ours-onnx"):
            precision = "int8" if server.endswith("int8") else "fp32"
            source = exported(model, threads)
            shutil.copytree(source, models_dir / model, dirs_exist_ok=True)
            manifest = models_dir / model / "manifest.toml"
            manifest.write_text(f'runtime = "onnx"\nprecision = "{precision}"\n' + manifest.read_text())
            if precision == "int8":
                argv.append("--trust-precision")  # random weights: see the agreement in the note
            graph = "model.int8.onnx (static QDQ, per-channel)" if precision == "int8" else "model.onnx"
            agreement = agreement_of(source, precision)
            note = f"the same on ONNX Runtime, {graph}; top-1 agreement with PyTorch: {agreement:.2%} of 300"
        else:
            # The same folder with the manifest asking for bf16. Random weights cannot pass the
            # agreement check a shipped model needs (see README), so the check is skipped.
            shutil.copytree(MODELS / model, models_dir / model, dirs_exist_ok=True)
            manifest = models_dir / model / "manifest.toml"
            manifest.write_text('precision = "bf16"\n' + manifest.read_text())  # a top-level key: first
            argv.append("--trust-precision")
            note = "the same, with the model's precision set to bf16 (autocast)"
        env = base_env(threads) | {"INFERENCE_TOKEN": token, "MODELFOLIO_OWNER": "modelfolio"}
        return Spec(
            server,
            argv,
            env,
            Target(predictions, body, json_type | {"authorization": f"Bearer {token}", "prefer": "wait"}),
            note,
        )
    if server == "naive":
        return Spec(
            server,
            [
                py,
                "-m",
                "benchmarks.naive_server",
                "--model",
                model,
                "--port",
                str(port),
                "--threads",
                str(threads),
            ],
            base_env(threads),
            Target(predictions, body, json_type),
            "Starlette, one decode + forward per request on the loop",
        )
    if server == "cog":
        folder = available("cog", install)
        if folder is None:
            return None
        env = base_env(threads, folder) | {
            "PORT": str(port),
            "BENCH_MODEL": model,
            "COG_MAX_CONCURRENCY": "32",
            "COG_PREDICT_TYPE_STUB": "benchmarks/others/cog_predict.py:Predictor",
        }
        return Spec(
            server,
            [py, "-m", "cog.server.http", "--host", "127.0.0.1"],
            env,
            Target(f"http://127.0.0.1:{port}/predictions", body, json_type),
            "cog 0.23.1 (coglet), async predictor, 32 slots",
        )
    if server.startswith("litserve"):
        folder = available("litserve", install)
        if folder is None:
            return None
        two_workers = server == "litserve-2w"
        options = ["--batch", "1", "--workers", "2"] if two_workers else ["--batch", "8", "--timeout", "0.01"]
        # Two workers share the same two cores: one torch thread each, the same threads in all.
        worker_threads = max(1, threads // 2) if two_workers else threads
        return Spec(
            server,
            [
                py,
                "-m",
                "benchmarks.others.litserve_server",
                "--model",
                model,
                "--port",
                str(port),
                "--threads",
                str(worker_threads),
                *options,
            ],
            base_env(threads, folder),
            Target(f"http://127.0.0.1:{port}/predict", body, json_type),
            "LitServe 0.2.19, "
            + ("2 workers x 1 thread, no batching" if two_workers else "batch 8, 10 ms timeout"),
        )
    raise ValueError(f"unknown server {server!r}")
