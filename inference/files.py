"""Turns file inputs (data URLs) into what a predictor takes: a checked PIL image, checked image
bytes (ImageBytes) or a Path.

Runs in a worker thread: decoding never blocks the event loop.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import mimetypes
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path as FsPath
from typing import Any
from urllib.parse import urlsplit

import httpx
import PIL.Image
import PIL.ImageOps

from inference.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from inference.predictor import ImageBytes, Path
from inference.schema import Field
from inference.uploads import Uploads

IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"}
_ORIENTATION = 0x0112  # the EXIF tag saying how a camera held the picture


def resolve(
    fields: list[Field],
    values: dict[str, Any],
    *,
    max_pixels: int,
    uploads: Uploads | None = None,
    fetch_hosts: tuple[str, ...] = (),
    max_fetch_bytes: int = 16 * 1024 * 1024,
) -> dict[str, Any]:
    """Replaces each file input's URL (a data URL, an uploaded file's URL, or an http(s) URL on an
    allow-listed host) with a decoded image or a temporary file."""
    resolved = dict(values)
    for f in fields:
        if f.is_file and isinstance(values.get(f.name), str):
            url = values[f.name]
            uploaded = uploads.read_url(url) if uploads is not None else None
            if uploaded is None and url.startswith(("http://", "https://")) and fetch_hosts:
                uploaded = fetch(f.name, url, fetch_hosts, max_fetch_bytes)
            mime, data = uploaded or read_data_url(f.name, url)
            if f.kind == "image" and f.encoded:
                resolved[f.name] = checked_image_bytes(f.name, mime, data, max_pixels=max_pixels)
            elif f.kind == "image":
                resolved[f.name] = decode_image(f.name, mime, data, max_pixels=max_pixels)
            else:
                resolved[f.name] = _to_temp_file(mime, data)
    return resolved


def cleanup(values: dict[str, Any]) -> None:
    for value in values.values():
        if isinstance(value, Path):
            value.unlink(missing_ok=True)


def data_url_of(path: FsPath) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def fetch(name: str, url: str, hosts: tuple[str, ...], max_bytes: int) -> tuple[str, bytes]:
    """GETs a URL whose host the owner allow-listed (--fetch-hosts); any other host is refused,
    so no caller can make this server reach into the network it runs in."""
    host = urlsplit(url).hostname
    if host not in hosts:
        raise InvalidInput(
            f"input '{name}': URLs on {host!r} are not fetched; send a data URL or an upload's URL"
        )
    body = bytearray()
    try:
        with (
            httpx.Client(timeout=10, follow_redirects=False) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise InvalidInput(f"input '{name}': fetching {url} answered {response.status_code}")
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise PayloadTooLarge(f"input '{name}': {url} is over {max_bytes / 1e6:.0f} MB")
            mime = response.headers.get("content-type", "application/octet-stream").split(";")[0]
    except httpx.HTTPError as exc:
        raise InvalidInput(f"input '{name}': {url} could not be fetched ({type(exc).__name__})") from None
    return mime.strip().lower(), bytes(body)


def read_data_url(name: str, url: str) -> tuple[str, bytes]:
    if url.startswith(("http://", "https://")):
        raise InvalidInput(
            f"input '{name}': URLs are not fetched by this server; send the file as a data URL "
            "(data:image/png;base64,...) or upload it with POST /v1/files and pass its URL"
        )
    if not url.startswith("data:") or "," not in url:
        raise InvalidInput(f"input '{name}' must be a data URL (data:<type>;base64,<data>)")
    header, _, payload = url[5:].partition(",")
    mime, *params = header.split(";")
    if "base64" not in params:
        raise InvalidInput(f"input '{name}': only base64 data URLs are accepted")
    try:
        return mime.strip().lower() or "application/octet-stream", base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"input '{name}': the data URL's base64 payload is malformed") from None


def decode_image(name: str, mime: str, data: bytes, *, max_pixels: int) -> PIL.Image.Image:
    with _problems_named(name, mime, data, max_pixels):
        image = _opened(name, mime, data, max_pixels)
        image.load()
    PIL.ImageOps.exif_transpose(image, in_place=True)  # a copy of every image otherwise
    return flatten(image)


def checked_image_bytes(name: str, mime: str, data: bytes, *, max_pixels: int) -> ImageBytes:
    """The bytes, once their header shows an image of a known format within the pixel limit;
    the pixels are left for the predictor to decode (on the GPU, where it has one)."""
    with _problems_named(name, mime, data, max_pixels):
        image = _opened(name, mime, data, max_pixels)
        if not _ends_whole(image.format, data):
            raise ValueError("it ends before its end marker")
        if image.format not in ("JPEG", "PNG"):  # decoded on the CPU anyway: check it all now
            image.load()
    encoded = ImageBytes(data)
    encoded.format, (encoded.width, encoded.height) = image.format or "", image.size
    encoded.orientation = int(image.getexif().get(_ORIENTATION, 1))
    return encoded


def _ends_whole(image_format: str | None, data: bytes) -> bool:
    """Whether a JPEG or PNG ends with its end marker, as a truncated upload does not: the cheap
    check for images whose pixels are decoded later, and maybe on the GPU."""
    if image_format == "JPEG":
        return data.rstrip(b"\0")[-2:] == b"\xff\xd9"
    if image_format == "PNG":
        return data[-12:-4] == b"\0\0\0\0IEND"
    return True


def _opened(name: str, mime: str, data: bytes, max_pixels: int) -> PIL.Image.Image:
    if mime != "application/octet-stream" and not mime.startswith("image/"):
        raise UnsupportedMediaType(f"input '{name}' must be an image, got a file of type {mime}")
    image = PIL.Image.open(io.BytesIO(data))
    # The header alone tells the size: refuse a decompression bomb before decoding it.
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"input '{name}' is {width}x{height} pixels; the limit is "
            f"{max_pixels / 1e6:g} megapixels. Downscale it first."
        )
    if image.format not in IMAGE_FORMATS:
        raise UnsupportedMediaType(
            f"input '{name}' is a {image.format} image; send PNG, JPEG, WebP, GIF, BMP or TIFF"
        )
    return image


@contextlib.contextmanager
def _problems_named(name: str, mime: str, data: bytes, max_pixels: int) -> Iterator[None]:
    """PIL's errors as 4xx answers that name the input."""
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is stricter and names the size; PIL's warning is noise.
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            yield
    except PIL.UnidentifiedImageError:
        raise InvalidInput(
            f"input '{name}' is not an image that can be decoded ({len(data)} bytes of {mime})"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"input '{name}' is a damaged or truncated image: {exc}") from None
    except PIL.Image.DecompressionBombError:
        # PIL's own bomb limit, where set (MAX_IMAGE_PIXELS may be None: no limit, no error).
        raise PayloadTooLarge(
            f"input '{name}' has more pixels than can be decoded safely; "
            f"the limit is {max_pixels / 1e6:g} megapixels. Downscale it first."
        ) from None


def flatten(image: PIL.Image.Image) -> PIL.Image.Image:
    """RGB or L; transparent pixels become white, as a drawing on a transparent canvas means."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = PIL.Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if image.mode in ("1", "I;16", "I", "F"):
        return image.convert("L")
    return image.convert("RGB")


def _to_temp_file(mime: str, data: bytes) -> Path:
    suffix = "." + mime.split("/")[-1] if "/" in mime else ""
    with tempfile.NamedTemporaryFile(prefix="modelfolio-", suffix=suffix, delete=False) as f:
        f.write(data)
    return Path(FsPath(f.name))
