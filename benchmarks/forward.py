"""Where the time goes without any server: decode, preprocessing and the forward pass, per
batch size and per variant (memory layout, bf16, torch.compile), with torch threads fixed.

    python -m benchmarks.forward [--models resnet18,resnet50] [--batches 1,4,8,16] [--compile]
                                 [--agreement 300]

`--agreement N` also prints how often bf16 autocast gives the same top-1 class as fp32 on N
generated surface pictures (inference/models/defects/surfaces.py), with these random weights.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from collections.abc import Callable
from typing import Any

import PIL.Image
import torch

from benchmarks import imagenet, resnet
from benchmarks.image import jpeg_bytes


def best_ms(fn: Callable[[], object], repeat: int = 5, budget_s: float = 3.0) -> float:
    fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < repeat or (time.perf_counter() < deadline and len(times) < 50):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
        if time.perf_counter() > deadline and len(times) >= 3:
            break
    times.sort()
    return times[len(times) // 2] * 1000  # median


def decode() -> PIL.Image.Image:
    image = PIL.Image.open(io.BytesIO(jpeg_bytes()))
    image.load()
    return image.convert("RGB")


Context = Callable[[], contextlib.AbstractContextManager[Any]]


def variants(arch: str, compile_: bool) -> dict[str, tuple[torch.nn.Module, Context]]:
    fp32 = resnet.build(arch)
    contiguous = resnet.build(arch).to(memory_format=torch.contiguous_format)
    contiguous[0].layout = torch.contiguous_format  # type: ignore[assignment]
    found: dict[str, tuple[torch.nn.Module, Context]] = {
        "fp32 contiguous": (contiguous, contextlib.nullcontext),
        "fp32 channels_last": (fp32, contextlib.nullcontext),
        "bf16 autocast channels_last": (fp32, lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
    }
    if compile_:
        compiled: Any = torch.compile(resnet.build(arch))  # an nn.Module still, typed as a function
        found["fp32 channels_last compiled"] = (compiled, contextlib.nullcontext)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--batches", default="1,4,8,16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to build)")
    parser.add_argument(
        "--agreement",
        type=int,
        default=0,
        metavar="N",
        help="also measure bf16's top-1 agreement with fp32 on N pictures",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    image = decode()
    print(f"torch {torch.__version__}, {args.threads} threads; JPEG {len(jpeg_bytes())} bytes")
    print(
        f"decode {best_ms(decode):.2f} ms, resize+crop {best_ms(lambda: imagenet.crop(image)):.2f} ms, "
        f"to_batch(8) {best_ms(lambda: resnet.to_batch([image] * 8)):.2f} ms"
    )
    for arch in args.models.split(","):
        print(f"\n{arch}: ms per batch (images/s)")
        print("| variant | " + " | ".join(f"batch {b}" for b in batches) + " |")
        print("|---|" + "---|" * len(batches))
        for name, (model, context) in variants(arch, args.compile).items():
            cells = []
            for b in batches:
                x = resnet.to_batch([image] * b)

                def forward(
                    model: torch.nn.Module = model, x: torch.Tensor = x, context: Context = context
                ) -> None:
                    with torch.inference_mode(), context():
                        model(x)

                ms = best_ms(forward)
                cells.append(f"{ms:.1f} ({b / ms * 1000:.0f})")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        if args.agreement:
            same, margin = agreement(resnet.build(arch), args.agreement)
            print(
                f"bf16 top-1 agreement with fp32: {same:.2%} of {args.agreement} pictures "
                f"(median top-1 margin over the runner-up: {margin:.3f} logits)"
            )


def agreement(model: torch.nn.Module, count: int) -> tuple[float, float]:
    """bf16's top-1 agreement with fp32, and the median gap between fp32's top two logits."""
    import numpy as np

    from inference.models.defects.surfaces import CLASSES, surface_image

    rng = np.random.default_rng(0)
    pictures = [surface_image(CLASSES[i % len(CLASSES)], rng).convert("RGB") for i in range(count)]
    same, margins = 0, []
    for start in range(0, count, 16):
        x = resnet.to_batch(pictures[start : start + 16])
        with torch.inference_mode():
            fp32 = model(x).float()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = model(x).float()
        same += int((fp32.argmax(1) == bf16.argmax(1)).sum())
        top2 = fp32.topk(2).values
        margins += (top2[:, 0] - top2[:, 1]).tolist()
    return same / count, sorted(margins)[len(margins) // 2]


if __name__ == "__main__":
    main()
