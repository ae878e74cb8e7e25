from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Where to find a Chromium: MODELFOLIO_CHROMIUM wins; then the usual system paths. Playwright's own
# downloaded browsers are used only if none is found (we never run `playwright install` ourselves).
_CHROMIUM_CANDIDATES = [
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
]


def chromium_path() -> str | None:
    explicit = os.environ.get("MODELFOLIO_CHROMIUM")
    if explicit:
        return explicit
    return next((c for c in _CHROMIUM_CANDIDATES if Path(c).exists() or shutil.which(c)), None)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    args = dict(browser_type_launch_args)
    path = chromium_path()
    if path:
        args["executable_path"] = path
    # Nothing but loopback may be contacted: no background fetches, no component updates.
    args["args"] = [*args.get("args", []), "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-dev-shm-usage"]
    return args


@pytest.fixture(scope="session")
def base_url() -> None:
    # pytest-base-url's own fixture trips a pytest deprecation (warnings are errors here); our
    # tests start their servers on free ports and pass full URLs.
    return None
