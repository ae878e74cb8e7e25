"""`python -m inference`: serve every model folder on 127.0.0.1:8001."""

from __future__ import annotations

import sys

import uvicorn

from inference import logs
from inference.app import create_app
from inference.config import ConfigError, settings_from


def main() -> None:
    try:
        settings = settings_from()
    except ConfigError as exc:
        sys.exit(f"inference: {exc}")
    logs.configure()
    print(f"inference server on http://{settings.host}:{settings.port} (models: {settings.models_dir})",
          file=sys.stderr)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                access_log=False, timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
