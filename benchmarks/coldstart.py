"""Where a cold start goes: our server from `Popen` to its first prediction, per runtime, with the
imports `python -X importtime` attributes to each package.

    python -m benchmarks.coldstart [--runs 3]
                                   [--cases shipped-onnx,shipped-torch,resnet50-onnx,resnet50-torch]

Cases: the shipped models (digits and defects, one server) as shipped, on ONNX Runtime, and the
same folders with `runtime = "torch"`; the benchmark's ResNet-50 on each runtime (its graph from
`benchmarks.servers.exported`). Each is started `--runs` times for the cold start and peak RSS
(medians), and once more under `-X importtime` for the breakdown, which that flag slows a little.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import servers
from benchmarks.load import Target, first_success
from benchmarks.procs import Server, free_port

SHIPPED = servers.ROOT / "inference" / "models"
PACKAGES = 8  # the slowest top-level packages shown per case
_IMPORT = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)")


def folder_for(case: str, workdir: Path) -> tuple[Path, str]:
    """A models folder for the case, and the model its first prediction goes to."""
    name, runtime = case.rsplit("-", 1)
    models = workdir / case
    if name == "shipped":
        shutil.copytree(SHIPPED, models, ignore=shutil.ignore_patterns("__pycache__", "_training.py"))
        for manifest in models.glob("*/manifest.toml"):
            manifest.write_text(manifest.read_text().replace('runtime = "onnx"', f'runtime = "{runtime}"'))
        return models, "digits"
    source = servers.exported(name, 2) if runtime == "onnx" else servers.MODELS / name
    shutil.copytree(source, models / name)
    manifest = models / name / "manifest.toml"
    manifest.write_text(f'runtime = "{runtime}"\n' + manifest.read_text())
    return models, name


def start(models: Path, model: str, log: Path, *, importtime: bool) -> tuple[float, float]:
    """Seconds to the first successful prediction and the peak RSS in MB, of one fresh server."""
    port, token = free_port(), secrets.token_urlsafe(16)
    flags = ["-X", "importtime"] if importtime else []
    argv = [sys.executable, *flags, "-m", "inference", "--models-dir", str(models), "--port", str(port)]
    argv += ["--threads", "2"]
    env = servers.base_env(2) | {"INFERENCE_TOKEN": token, "MODELFOLIO_OWNER": "modelfolio"}
    example = next((models / model / "examples").iterdir())
    url = f"data:image/{example.suffix[1:]};base64," + base64.b64encode(example.read_bytes()).decode()
    target = Target(
        f"http://127.0.0.1:{port}/v1/models/modelfolio/{model}/predictions",
        json.dumps({"input": {"image": url}}).encode(),
        {"content-type": "application/json", "authorization": f"Bearer {token}", "prefer": "wait"},
    )
    server = Server(model, argv, env, log)
    try:
        asyncio.run(first_success(target, deadline_s=120, gave_up=lambda: server.exited))
        return time.perf_counter() - server.started, server.peak_rss / 2**20
    finally:
        server.stop()


def slowest_imports(log: Path) -> list[tuple[str, float]]:
    """Milliseconds per package, from a `-X importtime` log: each package's cumulative time where
    it was first imported (so torchvision's excludes torch when torch came first)."""
    totals: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        found = _IMPORT.match(line)
        if found and "." not in found.group(3) and found.group(3) not in totals:
            totals[found.group(3)] = int(found.group(1)) / 1000
    shown = {name: ms for name, ms in totals.items() if name not in ("site", "encodings")}
    return sorted(shown.items(), key=lambda kv: -kv[1])[:PACKAGES]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.coldstart", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", default="shipped-onnx,shipped-torch,resnet50-onnx,resnet50-torch")
    args = parser.parse_args(argv)
    print(f"| case | cold start (median of {args.runs}) | peak RSS | slowest imports (ms, -X importtime) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="modelfolio-cold-") as tmp:
        for case in args.cases.split(","):
            models, model = folder_for(case, Path(tmp))
            runs = [
                start(models, model, Path(tmp) / f"{case}-{i}.log", importtime=False)
                for i in range(args.runs)
            ]
            log = Path(tmp) / f"{case}-importtime.log"
            start(models, model, log, importtime=True)
            imports = ", ".join(f"{name} {ms:.0f}" for name, ms in slowest_imports(log))
            cold = statistics.median(r[0] for r in runs)
            rss = statistics.median(r[1] for r in runs)
            each = ", ".join(f"{r[0]:.2f}" for r in runs)
            print(f"| {case} | {cold:.2f} s ({each}) | {rss:.0f} MB | {imports} |", flush=True)


if __name__ == "__main__":
    main()
