"""`python -m inference`: serve every model folder on 127.0.0.1:8001.

`python -m inference export <model> [--int8]`: write a model folder's ONNX variants (export.py).
"""

from __future__ import annotations

import ctypes
import sys

import uvicorn

from inference import logs
from inference.app import create_app
from inference.config import settings_from
from inference.errors import ConfigError
from inference.manifest import discover


def _fewer_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives threads that allocate at once arenas of their own, up to 8 per core; the decode
    threads' image buffers then spread over them and the server's RSS creeps up under load:
    ResNet-18 INT8 on ONNX Runtime, 30 s at 1, 8 and 32 clients, peaked at 242 MB, 187 MB with two
    arenas (benchmarks/README.md). Python's own small objects do not use malloc's arenas."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return  # not glibc: its allocator has no such arenas
    m_arena_max = -8
    mallopt(m_arena_max, arenas)


def main() -> None:
    if sys.argv[1:2] == ["export"]:
        from inference.export import main as export  # torch, only for this command

        sys.exit(export(sys.argv[2:]))
    try:
        settings = settings_from()
        discover(settings.models_dir)  # a broken model folder stops start-up here, by name
    except ConfigError as exc:
        sys.exit(f"inference: {exc}")
    logs.configure()
    _fewer_malloc_arenas()
    print(
        f"inference server on http://{settings.host}:{settings.port} (models: {settings.models_dir})",
        file=sys.stderr,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
