"""Procedural surfaces for the defect classifier: brushed metal and woven fabric, each either
`ok` or with one `scratch`, `spot` or `crack`. Every draw comes from the `rng` it is given, so a
seed makes a data set; train.py uses one seed for training and another for the held-out set.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("ok", "scratch", "spot", "crack")
SIDE = 128
_SUPERSAMPLE = 3  # defects are drawn bigger and box-filtered down, so thin lines are antialiased


def surface_image(label: str, rng: np.random.Generator) -> Image.Image:
    """One RGB picture of a surface with the defect named by `label` (or none, for `ok`)."""
    metal = rng.random() < 0.5
    gray = _brushed_metal(rng) if metal else _woven_fabric(rng)
    gray = gray + _uneven_light(rng)
    if label == "scratch":
        gray = _scratched(gray, rng)
    elif label == "spot":
        gray = _spotted(gray, rng)
    elif label == "crack":
        gray = _cracked(gray, rng)
    gray = gray + rng.normal(0.0, rng.uniform(0.005, 0.03), gray.shape)  # sensor noise
    tint = 1.0 + rng.uniform(-0.04, 0.04, size=3) * (1.0 if metal else 4.0)
    rgb = np.clip(gray[..., None] * tint, 0.0, 1.0)
    return Image.fromarray(np.round(rgb * 255.0).astype(np.uint8))


def _brushed_metal(rng: np.random.Generator) -> np.ndarray:
    """Fine streaks along one random direction: white noise smeared along the grain."""
    noise = rng.normal(size=(SIDE, SIDE))
    angle = rng.uniform(0.0, np.pi)
    length = int(rng.integers(12, 40))
    streaks = np.zeros_like(noise)
    for step in range(length):
        shift = (round(step * np.sin(angle)), round(step * np.cos(angle)))
        streaks += np.roll(noise, shift, axis=(0, 1))
    streaks /= streaks.std()
    return rng.uniform(0.35, 0.75) + rng.uniform(0.02, 0.06) * streaks


def _woven_fabric(rng: np.random.Generator) -> np.ndarray:
    """Plain weave: threads over and under in a checkerboard, each thread a little different."""
    period = rng.uniform(4.0, 9.0)
    angle = rng.uniform(-0.4, 0.4) + rng.integers(0, 2) * np.pi / 2
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64)
    u = (xx * np.cos(angle) + yy * np.sin(angle)) / period
    v = (-xx * np.sin(angle) + yy * np.cos(angle)) / period
    warp, weft = np.floor(u).astype(int), np.floor(v).astype(int)
    warp_tone = rng.normal(0.0, 0.04, size=warp.max() - warp.min() + 1)[warp - warp.min()]
    weft_tone = rng.normal(0.0, 0.04, size=weft.max() - weft.min() + 1)[weft - weft.min()]
    over = (warp + weft) % 2 == 0
    warp_thread = np.sin(np.pi * (u - warp)) ** 0.6 + warp_tone
    weft_thread = np.sin(np.pi * (v - weft)) ** 0.6 + weft_tone
    threads = np.where(over, warp_thread, weft_thread)
    return rng.uniform(0.3, 0.7) + rng.uniform(0.08, 0.25) * (threads - 0.7)


def _uneven_light(rng: np.random.Generator) -> np.ndarray:
    """A light gradient plus soft mottling, which a faint spot must stand out from."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE - 0.5
    gradient = rng.uniform(-0.15, 0.15) * xx + rng.uniform(-0.15, 0.15) * yy
    coarse = Image.fromarray(rng.normal(size=(6, 6)).astype(np.float32))
    mottle = np.asarray(coarse.resize((SIDE, SIDE), Image.Resampling.BICUBIC))
    return gradient + rng.uniform(0.0, 0.03) * mottle


def _scratched(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A thin straight or gently curved line, lighter (bare metal) or darker (dirt) than around."""
    length = rng.uniform(35.0, 110.0)
    angle = rng.uniform(0.0, np.pi)
    middle = rng.uniform(24.0, SIDE - 24.0, size=2)
    half = length / 2 * np.array([np.cos(angle), np.sin(angle)])
    start, end = middle - half, middle + half
    bend = rng.uniform(-0.12, 0.12) * length * np.array([-np.sin(angle), np.cos(angle)])
    t = np.linspace(0.0, 1.0, 24)[:, None]
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * (middle + bend) + t**2 * end
    mask = _draw_lines([points], [rng.uniform(1.2, 2.6)])
    fade = rng.uniform(0.6, 1.0)  # a scratch is seldom equally deep along its length
    mask *= np.linspace(fade, 1.0, SIDE)[None, :] if rng.random() < 0.5 else 1.0
    sign = 1.0 if rng.random() < 0.6 else -1.0
    return gray + sign * rng.uniform(0.12, 0.35) * mask


def _spotted(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stain: a blob of random size, shape, edge softness and contrast, mostly darker."""
    centre = rng.uniform(14.0, SIDE - 14.0, size=2)
    radii = rng.uniform(4.0, 16.0) * np.array([1.0, rng.uniform(0.5, 1.0)])
    angle = rng.uniform(0.0, np.pi)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64)
    dx, dy = xx - centre[0], yy - centre[1]
    along = (dx * np.cos(angle) + dy * np.sin(angle)) / radii[0]
    across = (-dx * np.sin(angle) + dy * np.cos(angle)) / radii[1]
    distance = np.sqrt(along**2 + across**2)
    wobble = np.asarray(
        Image.fromarray(rng.normal(0.0, 0.15, (5, 5)).astype(np.float32)).resize(
            (SIDE, SIDE), Image.Resampling.BICUBIC
        )
    )
    edge = np.clip((distance + wobble - 1.0) * rng.uniform(3.0, 12.0), -30.0, 30.0)
    mask = 1.0 / (1.0 + np.exp(edge))
    sign = -1.0 if rng.random() < 0.75 else 1.0
    return gray + sign * rng.uniform(0.08, 0.3) * mask


def _cracked(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dark jagged polyline wandering from a start point, with a few thinner branches."""
    start = rng.uniform(12.0, SIDE - 12.0, size=2)
    inward = np.arctan2(SIDE / 2 - start[1], SIDE / 2 - start[0]) + rng.normal(0.0, 0.8)
    trunk = _jagged_path(rng, start, inward, rng.uniform(40.0, 110.0))
    paths, widths = [trunk], [rng.uniform(1.2, 2.2)]
    for _ in range(int(rng.integers(0, 4))):
        fork = trunk[int(rng.integers(1, len(trunk)))]
        direction = np.arctan2(*(trunk[-1] - trunk[0])[::-1]) + rng.choice([-1, 1]) * rng.uniform(0.5, 1.3)
        paths.append(_jagged_path(rng, fork, direction, rng.uniform(10.0, 40.0)))
        widths.append(widths[0] * rng.uniform(0.5, 0.9))
    mask = _draw_lines(paths, widths)
    return gray * (1.0 - rng.uniform(0.35, 0.7) * mask)


def _jagged_path(rng: np.random.Generator, start: np.ndarray, heading: float, length: float) -> np.ndarray:
    points = [start]
    travelled = 0.0
    while travelled < length:
        heading += rng.normal(0.0, 0.15)
        step = rng.uniform(3.0, 8.0)
        turn = heading + rng.normal(0.0, 0.6)
        points.append(points[-1] + step * np.array([np.cos(turn), np.sin(turn)]))
        travelled += step
    return np.array(points)


def _draw_lines(paths: list[np.ndarray], widths: list[float]) -> np.ndarray:
    """Coverage in 0..1 of antialiased polylines of the given pixel widths."""
    big = Image.new("L", (SIDE * _SUPERSAMPLE, SIDE * _SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(big)
    for points, width in zip(paths, widths, strict=True):
        scaled = [tuple(p) for p in points * _SUPERSAMPLE]
        draw.line(scaled, fill=255, width=max(1, round(width * _SUPERSAMPLE)), joint="curve")
    small = big.resize((SIDE, SIDE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64) / 255.0
