"""The owner dashboard's pages, rendered by the proxy on each request and never built into dist/:
`GET /admin` (the figures for `?from=YYYY-MM-DD&to=YYYY-MM-DD`, or the sign-in form),
`POST /admin/login`, `POST /admin/logout`, `GET /admin/dashboard.css`.

Every answer is `Cache-Control: no-store` and carries the site's security headers (no script at
all runs here); a form post from another origin is refused. Without ADMIN_TOKEN the dashboard
does not exist (404).
"""

from __future__ import annotations

import datetime
import logging
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from anyio import to_thread
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from proxy.billing import billing_of
from proxy.billing.money import to_cents
from proxy.dashboard.charts import colour, stacked_bars
from proxy.dashboard.figures import Figures, Period, read_figures
from proxy.dashboard.session import Sessions
from proxy.errors import StorageUnavailable
from proxy.logs import log_event
from proxy.site import security_headers

TEMPLATES = Path(__file__).parent / "templates"
DEFAULT_DAYS = 30
MAX_DAYS = 366
NONE = "\N{EN DASH}"  # a figure with nothing to show
_NO_STORE = {
    "cache-control": "no-store, max-age=0",
    "pragma": "no-cache",
    "x-robots-tag": "noindex, nofollow",
    # same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` with the
    # page's own form posts, which could not then be told from another site's.
    "referrer-policy": "same-origin",
    "vary": "Cookie, Authorization",
}
_jinja = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))


def _headers() -> dict[str, str]:
    return {**security_headers(), **_NO_STORE}


def _sessions(request: Request) -> Sessions | None:
    config = billing_of(request).config
    token = config.secrets.admin_token
    return Sessions(token, secure=config.public_origin.startswith("https:")) if token else None


def _render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    owner = billing_of(request).config.owner
    body = _jinja.get_template(template).render(owner=owner, **values)
    return HTMLResponse(body, status_code=status, headers=_headers())


def _off() -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Not found</title></head><body><main>"
        "<h1>Not found</h1><p>The owner dashboard is off here: ADMIN_TOKEN is not set.</p>"
        "</main></body></html>",
        status_code=404,
        headers=_headers(),
    )


def _same_origin(request: Request) -> bool:
    """A form post must come from a page of this site (SameSite=Strict already keeps the
    session cookie off other sites' requests; this also covers the sign-in form)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    ours = {billing_of(request).config.public_origin, f"{request.url.scheme}://{request.url.netloc}"}
    return origin.rstrip("/") in ours


async def dashboard(request: Request) -> Response:
    sessions = _sessions(request)
    if sessions is None:
        return _off()
    if not sessions.signed_in(request):
        return _render(request, "login.html", title="Owner dashboard", signed_in=False)
    today = billing_of(request).clock().date()
    period, error = _period(request.query_params.get("from"), request.query_params.get("to"), today)
    try:
        figures = await to_thread.run_sync(read_figures, billing_of(request).usage_store.database, period)
    except StorageUnavailable as problem:
        log_event("dashboard_unavailable", level=logging.ERROR, reason=str(problem))
        response = _render(
            request,
            "login.html",
            503,
            title="The ledger cannot be reached",
            signed_in=True,
            error="The ledger's database cannot be reached right now; try again shortly.",
        )
        response.headers["retry-after"] = "5"
        return response
    return _render(request, "dashboard.html", 400 if error else 200, **_view(figures, error))


def _period(first: str | None, last: str | None, today: datetime.date) -> tuple[Period, str | None]:
    """The chosen days, or the last 30 with a message saying what was wrong."""
    default = Period(today - datetime.timedelta(days=DEFAULT_DAYS - 1), today)
    if first is None and last is None:
        return default, None
    try:
        period = Period(datetime.date.fromisoformat(first or ""), datetime.date.fromisoformat(last or ""))
    except ValueError:
        return (
            default,
            f"Dates are written YYYY-MM-DD, like {today.isoformat()}; showing the last {DEFAULT_DAYS} days.",
        )
    if period.last < period.first:
        return default, "“From” is after “To”; showing the last 30 days."
    if (period.last - period.first).days >= MAX_DAYS:
        return default, f"A period is at most {MAX_DAYS} days; showing the last {DEFAULT_DAYS} days."
    return period, None


def _view(figures: Figures, error: str | None) -> dict[str, Any]:
    models = [m.model for m in figures.models]
    counts = {m: {d: Decimal(v) for d, v in figures.predictions_by_day.get(m, {}).items()} for m in models}
    revenue = {m: dict(figures.revenue_by_day.get(m, {})) for m in models}
    days = figures.period.days
    daily = [
        (
            day.isoformat(),
            model,
            figures.predictions_by_day[model][day.isoformat()],
            figures.revenue_by_day[model][day.isoformat()],
        )
        for day in days
        for model in models
        if figures.predictions_by_day.get(model, {}).get(day.isoformat())
    ]
    return {
        "title": "Owner dashboard",
        "signed_in": True,
        "period": figures.period,
        "figures": figures,
        "error": error,
        "legend": [(model, colour(index)) for index, model in enumerate(models)],
        "predictions_chart": stacked_bars(
            "predictions-chart", "Predictions per day", days, counts, "{} predictions"
        ),
        "revenue_chart": stacked_bars("revenue-chart", "Revenue per day", days, revenue, "${}"),
        "daily": daily,
        "money": lambda amount: f"${to_cents(amount)}",
        "cents": _cents,
        "ms": lambda value: NONE if value is None else f"{value} ms",
        "rate": _rate,
    }


def _cents(cents: int | Decimal) -> str:
    whole = int(cents)
    sign = "-" if whole < 0 else ""
    return f"{sign}${abs(whole) // 100}.{abs(whole) % 100:02d}"


def _rate(rate: Decimal | None) -> str:
    if rate is None:
        return NONE
    return f"{(rate * 100).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)} %"


def _refused(request: Request, status: int, error: str) -> Response:
    """The sign-in form again, saying why."""
    return _render(request, "login.html", status, title="Owner dashboard", signed_in=False, error=error)


async def login(request: Request) -> Response:
    sessions = _sessions(request)
    if sessions is None:
        return _off()
    if not _same_origin(request):
        return _refused(request, 403, "This form must be sent from this site.")
    form = await request.form()
    presented = form.get("token")
    if not isinstance(presented, str) or not sessions.is_token(presented.strip()):
        log_event("admin_sign_in_refused", level=logging.WARNING)
        return _refused(request, 401, "That is not the admin token.")
    log_event("admin_signed_in")
    response = RedirectResponse("/admin", status_code=303, headers=_NO_STORE)
    sessions.sign_in(response)
    return response


async def logout(request: Request) -> Response:
    sessions = _sessions(request)
    if sessions is None:
        return _off()
    if not _same_origin(request):
        return _refused(request, 403, "This form must be sent from this site.")
    response = RedirectResponse("/admin", status_code=303, headers=_NO_STORE)
    sessions.sign_out(response)
    return response


async def stylesheet(request: Request) -> Response:
    if _sessions(request) is None:
        return _off()
    return Response(
        (TEMPLATES / "dashboard.css").read_bytes(),
        media_type="text/css",
        headers={**security_headers(), "cache-control": "no-cache"},
    )
