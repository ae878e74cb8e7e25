"""What crawlers and share previews read: sitemap.xml, robots.txt."""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape


def sitemap(origin: str, urls: Sequence[str]) -> str:
    """Listed pages only: an unlisted model is for those given its link."""
    entries = "".join(f"  <url><loc>{escape(origin + url)}</loc></url>\n" for url in urls)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        f"{entries}"
        "</urlset>\n"
    )


def robots(origin: str) -> str:
    # The API and the billing pages are not content; shared result links carry a query, and a
    # result is its creator's (or, where the owner made a model's results public, still no page
    # to index).
    return (
        "User-agent: *\n"
        "Allow: /\n"
        "Disallow: /v1/\n"
        "Disallow: /billing/\n"
        "Disallow: /*?result=\n"
        f"\nSitemap: {origin}/sitemap.xml\n"
    )
