"""The site's pictures, drawn at build time from what the repository holds: no external asset.

- a model's *art*: its own example images in a row, each with the answer the model gave
  (gallery.json), on the index card and beside the model's title;
- a model's *cover* (Open Graph / Twitter, 1200x630): the art with the title and address;
- the site's cover (the index's share picture) and the icons a browser asks for.

Text is set in Pillow's bundled font, so the build needs no font on the machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COVER_SIZE = (1200, 630)  # what Open Graph and Twitter's large card expect
ART_SIZE = (960, 360)
HEADER = 190  # the cover's band above the art
BACKDROP = (30, 27, 75)  # indigo-950: reads on light and dark pages alike
TILE_BACKDROP = (49, 46, 129)  # indigo-900
INK = (255, 255, 255)
SOFT_INK = (199, 210, 254)  # indigo-200
ACCENT = (79, 70, 229)  # indigo-600, the site's accent
GOOD = (134, 239, 172)  # green-300: the answer matches what the example shows
MISS = (253, 186, 116)  # orange-300: it does not


@dataclass(frozen=True)
class Tile:
    image: Path
    answer: str | None  # "7 · 98.5 %", or None when no answer is recorded
    correct: bool | None  # whether the answer is the example's expected label


def draw_art(tiles: Sequence[Tile], size: tuple[int, int] = ART_SIZE) -> Image.Image:
    """Up to four examples side by side, each over its recorded answer."""
    canvas = Image.new("RGB", size, BACKDROP)
    shown = list(tiles)[:4]
    if not shown:
        return canvas
    width, height = size
    gap = width // 30
    side = min((width - gap * (len(shown) + 1)) // len(shown), int(height * 0.6))
    left = (width - side * len(shown) - gap * (len(shown) - 1)) // 2
    top = (height - side - side // 3) // 2
    draw = ImageDraw.Draw(canvas)
    # One size for every answer: the largest at which the longest one fits under its tile.
    longest = max(
        (tile.answer or "" for tile in shown), key=lambda text: draw.textlength(text, font=_font(20))
    )
    font = _fit(draw, longest, side + gap - 8, max(14, side // 5), smallest=12)
    for index, tile in enumerate(shown):
        x = left + index * (side + gap)
        draw.rounded_rectangle((x - 4, top - 4, x + side + 4, top + side + 4), radius=14, fill=TILE_BACKDROP)
        with Image.open(tile.image) as opened:
            picture = opened.convert("RGB")
        small = max(picture.size) <= 48  # an 8x8 digit: crisp pixels, not a blur
        picture = picture.resize(
            (side, side), Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS
        )
        mask = Image.new("L", (side, side), 0)
        ImageDraw.Draw(mask).rounded_rectangle((0, 0, side - 1, side - 1), radius=10, fill=255)
        canvas.paste(picture, (x, top), mask)
        if tile.answer:
            colour = SOFT_INK if tile.correct is None else GOOD if tile.correct else MISS
            draw.text(
                (x + side // 2, top + side + side // 10), tile.answer, font=font, fill=colour, anchor="mt"
            )
    return canvas


def draw_cover(tiles: Sequence[Tile], title: str, subtitle: str, note: str) -> Image.Image:
    """The share picture: the title, the address and a measured figure over the art."""
    canvas = Image.new("RGB", COVER_SIZE, BACKDROP)
    width, height = COVER_SIZE
    canvas.paste(draw_art(tiles, (width, height - HEADER)), (0, HEADER))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, width, 10), fill=ACCENT)
    draw.text((60, 50), title, font=_fit(draw, title, width - 120, 60), fill=INK)
    draw.text((60, 130), subtitle, font=_font(30), fill=SOFT_INK)
    if note:
        draw.text((width - 60, 130), note, font=_font(30), fill=SOFT_INK, anchor="ra")
    return canvas


def draw_site_cover(owner: str, tiles: Sequence[Tile], tagline: str) -> Image.Image:
    """The index's share picture: the owner's handle over examples from the listed models."""
    canvas = Image.new("RGB", COVER_SIZE, BACKDROP)
    width, height = COVER_SIZE
    canvas.paste(draw_art(tiles, (width, height - HEADER)), (0, HEADER))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, width, 10), fill=ACCENT)
    draw.text((60, 50), owner, font=_fit(draw, owner, width - 120, 60), fill=INK)
    draw.text((60, 130), tagline, font=_font(30), fill=SOFT_INK)
    return canvas


def draw_icon(size: int) -> Image.Image:
    """The favicon's "M" on the accent square (site/static/favicon.svg drawn again, as pixels)."""
    scale = size / 32
    icon = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle((0, 0, size - 1, size - 1), radius=int(8 * scale), fill=ACCENT)
    points = [(9, 22), (9, 10), (16, 17), (23, 10), (23, 22)]
    draw.line(
        [(x * scale, y * scale) for x, y in points], fill=INK, width=max(1, round(3 * scale)), joint="curve"
    )
    return icon


def save_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)


def save_jpeg(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=85, optimize=True, progressive=True)


def save_webp(image: Image.Image, path: Path, width: int) -> tuple[int, int]:
    """A smaller rendition for the pages themselves; returns its size for the <img> tag."""
    resized = image.resize((width, image.height * width // image.width), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    resized.save(path, format="WEBP", quality=82, method=4)
    return resized.size


def save_icons(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    draw_icon(64).save(dest / "favicon.ico", format="ICO", sizes=[(16, 16), (32, 32), (48, 48)])
    save_png(draw_icon(180).convert("RGB"), dest / "apple-touch-icon.png")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _fit(
    draw: ImageDraw.ImageDraw, text: str, width: int, size: int, smallest: int = 24
) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The largest font up to `size` in which `text` fits on one line of `width` pixels."""
    while size > smallest and draw.textlength(text, font=_font(size)) > width:
        size -= 2
    return _font(size)
