"""Self-serve API keys: "Get an API key" on a model page starts a Stripe Checkout for a
subscription with every model's metered price (one item each: they cost nothing until used, and a
key then works on every model); once Stripe confirms the payment (proxy/billing/webhooks.py), the
welcome page shows the customer their key, once.

How a key is shown once: its secret is made at the moment of first display, never before. The
webhook only binds a key id to the paid checkout session; the welcome page then generates the
secret, stores its hash and marks the session shown in one transaction, and sends the plaintext
in that single response. The plaintext is never written anywhere (not encrypted, not in memory
for later), so nothing can leak it afterwards and any proxy sharing the ledger can show it.
The session id travels in the success URL (history, logs of anything on the way), so it alone
is not enough: the browser that started the checkout holds a random cookie whose hash went into
the session's metadata, and only that browser is shown the key.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import re
import secrets
from urllib.parse import parse_qs

import stripe
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from proxy.auth import hash_key, new_api_key
from proxy.billing import billing_of
from proxy.billing.catalog import current_prices, price_lookup_key
from proxy.forward import limited
from proxy.logs import annotate, log_event
from proxy.site import page

COOKIE = "mf_checkout"
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}/[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_SESSION = re.compile(r"cs_[A-Za-z0-9_]{1,240}")


async def start(request: Request) -> Response:
    billing = billing_of(request)
    await billing.admit(request)  # the edge's rate limits hold here too
    if billing.stripe is None:
        return page(
            503,
            "Billing is not configured",
            "Billing is not configured on this portfolio, so API keys cannot be bought here yet. "
            'The free demo and the <a href="/">quick start</a> work without one.',
        )
    body = b"".join([chunk async for chunk in limited(request.stream(), 4096)])
    model = (parse_qs(body.decode("utf-8", "replace")).get("model") or [""])[0]
    if not _MODEL.fullmatch(model):
        return page(400, "Which model?", "The form did not say which model the key is for.")
    owner, name = model.split("/")
    try:
        prices = await current_prices(billing.stripe)
        if price_lookup_key(model) not in prices:
            return page(
                503,
                "Not for sale yet",
                f"{html.escape(model)} has no price at Stripe yet; the owner runs "
                "<code>python -m proxy billing sync-catalog</code> to create it.",
            )
        nonce = secrets.token_urlsafe(32)
        origin = billing.config.public_origin
        session = await billing.stripe.v1.checkout.sessions.create_async(
            {
                "mode": "subscription",
                "line_items": [{"price": price} for price in _line_items(prices, price_lookup_key(model))],
                # Flexible: a price moved mid-period still bills the usage before the move.
                "subscription_data": {"billing_mode": {"type": "flexible"}, "metadata": {"modelfolio": "1"}},
                "success_url": f"{origin}/billing/welcome?session_id={{CHECKOUT_SESSION_ID}}",
                "cancel_url": f"{origin}/models/{name}/" if owner == billing.config.owner else f"{origin}/",
                "metadata": {"modelfolio_model": model, "modelfolio_browser": _digest(nonce)},
            }
        )
    except stripe.StripeError as error:
        log_event("checkout_failed", model=model, error=type(error).__name__, status=error.http_status)
        return page(
            502, "Stripe did not answer", "Checkout could not be started. Please try again in a minute."
        )
    annotate(request.scope, checkout_session=session.id)
    response = RedirectResponse(str(session.url), status_code=303)
    response.set_cookie(
        COOKIE,
        nonce,
        max_age=86400,
        path="/billing",
        httponly=True,
        samesite="lax",  # sent on the top-level redirect back from Stripe, not on cross-site posts
        secure=origin.startswith("https://"),
    )
    return response


async def welcome(request: Request) -> Response:
    billing = billing_of(request)
    session_id = request.query_params.get("session_id", "")
    if not _SESSION.fullmatch(session_id):
        return _private(
            page(
                400, "No checkout here", "This address needs the checkout session Stripe sent you back with."
            )
        )
    annotate(request.scope, checkout_session=session_id)
    record = await to_thread.run_sync(billing.stripe_store.checkout_key, session_id)
    if record is None:
        # Stripe redirects at once and confirms by webhook a moment later.
        return _private(
            page(
                202,
                "Confirming your payment",
                "Stripe has not confirmed this checkout yet. This page reloads by itself in a few seconds.",
                head='<meta http-equiv="refresh" content="3">',
            )
        )
    if record.revoked_at is not None:
        return _private(
            page(410, "Subscription ended", "This subscription has ended, so its key no longer works.")
        )
    if record.shown_at is not None:
        return _already_shown()
    cookie = request.cookies.get(COOKIE, "")
    if record.browser_hash and not hmac.compare_digest(_digest(cookie), record.browser_hash):
        return _private(
            page(
                403,
                "Open this in the browser you paid in",
                "For your safety the key is shown only in the browser that started the checkout. "
                "If that is not possible, ask the owner of this portfolio for a new key.",
            )
        )
    key_id, key = new_api_key(record.key_id)
    if not await to_thread.run_sync(
        billing.stripe_store.claim_checkout_key, session_id, hash_key(key), billing.now()
    ):
        return _already_shown()  # another request showed it a moment ago
    log_event("api_key_issued", key_id=key_id, via="checkout")
    response = _private(
        page(
            200,
            "Your API key",
            "This is the only time it is shown; copy it now and keep it secret.</p>"
            f'<pre><code data-testid="api-key">{html.escape(key)}</code></pre>'
            "<p>Use it as <code>Authorization: Bearer &lt;key&gt;</code>, e.g. "
            "<code>export MODELFOLIO_API_KEY=...</code> for the snippets on each model page. "
            'Predictions are billed per millisecond of compute. <a href="/">Back to the models</a>.',
        )
    )
    response.delete_cookie(COOKIE, path="/billing")
    return response


MAX_RECURRING_ITEMS = (
    20  # https://docs.stripe.com/api/checkout/sessions/create#create_checkout_session-line_items
)


def _line_items(prices: dict[str, str], chosen: str) -> list[str]:
    """The chosen model's price first, then the others, up to what one Checkout subscription
    takes; past that, `billing sync-catalog` adds the rest to the subscription."""
    others = [price for key, price in sorted(prices.items()) if key != chosen]
    return [prices[chosen], *others][:MAX_RECURRING_ITEMS]


def _already_shown() -> HTMLResponse:
    return _private(
        page(
            410,
            "Key already shown",
            "The API key for this checkout was already shown once and is never shown again. "
            "If you lost it, ask the owner of this portfolio to create a new one.",
        )
    )


def _digest(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


def _private(response: HTMLResponse) -> HTMLResponse:
    # The URL holds the session id: no cache keeps the page, no Referer carries the address on.
    response.headers["cache-control"] = "no-store"
    response.headers["referrer-policy"] = "no-referrer"
    return response


ROUTES = [
    Route("/billing/checkout", start, methods=["POST"]),
    Route("/billing/welcome", welcome, methods=["GET"]),
]
