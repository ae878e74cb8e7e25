"""The owner dashboard at /admin, behind ADMIN_TOKEN: what the proxy has billed, served and paid.

pages.py    the routes: sign in and out, the figures for a period
session.py  who may see it: the token once, then a signed, HttpOnly, SameSite=Strict cookie
figures.py  the period's figures, read from the ledger
charts.py   bar charts as SVG, drawn on the server
"""

from __future__ import annotations

from starlette.routing import Route

from proxy.dashboard.pages import dashboard, login, logout, stylesheet

ROUTES = [
    Route("/admin", dashboard, methods=["GET"]),
    Route("/admin/login", login, methods=["POST"]),
    Route("/admin/logout", logout, methods=["POST"]),
    Route("/admin/dashboard.css", stylesheet, methods=["GET"]),
]

__all__ = ["ROUTES"]
