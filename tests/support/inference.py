"""Starting a real inference server for tests, and making the inputs a browser would send."""

from __future__ import annotations

import base64
import contextlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import PIL.Image

from inference.app import create_app
from inference.config import Settings
from proxy.config import load_config
from tests.support.servers import serve

TOKEN = "test-inference-token-7f3a9c"  # a marker: tests assert it never leaks
OWNER = load_config(require_secrets=False).owner  # the repository's wrangler.toml says it once


def model_folder(parent: Path, name: str, predict_py: str, manifest: str = "") -> Path:
    """A model folder written by a test: its predict.py, and a manifest of a title, a price and
    whatever `manifest` adds (TOML)."""
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text(predict_py)
    (folder / "manifest.toml").write_text(f'title = "{name.title()}"\nprice_per_second = "0.001"\n{manifest}')
    return folder


@contextlib.contextmanager
def model_server(parent: Path, name: str, predict_py: str, manifest: str = "") -> Iterator[str]:
    """An inference server serving just that one model folder (see model_folder)."""
    with inference_server(model_folder(parent, name, predict_py, manifest).parent) as url:
        yield url


@contextlib.contextmanager
def inference_server(models_dir: Path, **overrides: object) -> Iterator[str]:
    settings = settings_for(models_dir, **overrides)
    with serve(create_app(settings)) as url:
        wait_ready(url)
        yield url


def settings_for(models_dir: Path, **overrides: object) -> Settings:
    """The inference server's settings in tests: the test token and owner, unless overridden."""
    values: dict[str, Any] = {"token": TOKEN, "owner": OWNER, "models_dir": models_dir, **overrides}
    return Settings(**values)


def wait_ready(url: str, timeout: float = 120.0) -> None:
    """Polls /readyz: the server loads its models in the background after it starts listening."""
    deadline = time.monotonic() + timeout
    while True:
        try:  # a probe may time out while a busy machine loads and warms the models: ask again
            last: object = httpx.get(f"{url}/readyz", timeout=10).status_code
        except httpx.TransportError as error:
            last = repr(error)
        if last == 200:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready after {timeout} s (last answer {last})")
        time.sleep(0.05)


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def png_data_url(size: tuple[int, int] = (32, 24), color: str = "white", mode: str = "RGB") -> str:
    return data_url(image_bytes(size, color, mode=mode), "image/png")


def image_bytes(
    size: tuple[int, int] = (32, 24), color: str = "white", *, fmt: str = "PNG", mode: str = "RGB"
) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.new(mode, size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
