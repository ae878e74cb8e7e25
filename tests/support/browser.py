"""What the browser tests measure on a page as a visitor meets it: axe-core's accessibility
findings, overflow past the viewport, tap targets, and the actions a test performs (a drop, a
paste of a real clipboard)."""

from __future__ import annotations

import base64
import importlib.resources
from functools import cache
from pathlib import Path
from typing import Any

from playwright.sync_api import Page

WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
MIN_TAP_PX = 44


@cache
def axe_source() -> str:
    # axe-core as the pinned axe-playwright-python wheel bundles it (the test extra installs it):
    # nothing is fetched at test time.
    return (importlib.resources.files("axe_playwright_python") / "axe.min.js").read_text(encoding="utf-8")


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.1 A and AA violations on the page as it is now, one line each."""
    # Evaluated through the DevTools protocol, which the page's Content-Security-Policy does not
    # govern: the page itself still may not run inline scripts.
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source())
    results = page.evaluate(
        "(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        WCAG_21_AA,
    )
    return [
        {
            "rule": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "where": [" ".join(node["target"]) for node in v["nodes"]][:5],
            "why": v["nodes"][0]["failureSummary"] if v["nodes"] else "",
        }
        for v in results["violations"]
    ]


def overflow_px(page: Page) -> int:
    """How far the page reaches past the viewport's right edge (0: no sideways scrolling)."""
    return int(page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth"))


_SMALL_TARGETS = """(min) => {
  const found = [];
  const controls = document.querySelectorAll([
    "a[href]", "button", "input:not([type=hidden])", "select", "textarea", "summary",
    "[role=button]", "[tabindex]:not([tabindex='-1'])",
  ].join(","));
  for (const el of controls) {
    const box = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (box.width <= 1 || box.height <= 1 || style.visibility === "hidden") continue;
    const clipped = style.clipPath === "inset(50%)" || style.clip === "rect(0px, 0px, 0px, 0px)";
    if (clipped) continue; // sr-only until focused
    if (el.tagName === "A" && el.closest("p, li") && style.display === "inline") continue;
    if (box.width < min - 0.5 || box.height < min - 0.5) {
      const name = (el.textContent || el.getAttribute("aria-label") || "").trim().slice(0, 40);
      found.push(`${el.tagName.toLowerCase()} "${name}" ${Math.round(box.width)}x${Math.round(box.height)}`);
    }
  }
  return found;
}"""


def small_tap_targets(page: Page) -> list[str]:
    """Visible controls smaller than 44x44 CSS px, except links inside running text (WCAG's
    inline exception) and what is hidden until focused (the skip link: 44 px once shown)."""
    return list(page.evaluate(_SMALL_TARGETS, MIN_TAP_PX))


def drop_file(page: Page, selector: str, path: Path, mime: str) -> None:
    """Drags a file onto the element the way a person's drop arrives: a DataTransfer in a drop event."""
    data = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([data, name, mime]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: mime}));
            return dt;
        }""",
        [data, path.name, mime],
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def put_on_clipboard(page: Page, data: bytes | str, mime: str) -> None:
    """Writes to the browser's real clipboard (the context needs clipboard permissions)."""
    payload = base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()
    page.evaluate(
        """async ([data, mime]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const item = new ClipboardItem({[mime]: new Blob([bytes], {type: mime})});
            await navigator.clipboard.write([item]);
        }""",
        [payload, mime],
    )
