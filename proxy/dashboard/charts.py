"""Bar charts drawn on the server as SVG: no script, no library, nothing fetched. One bar per day,
stacked by model, with a title and description for screen readers and a tooltip per segment; the
same numbers are in a table beside it. Values are Decimals; the drawing's coordinates are rounded
to a tenth of a pixel, which is geometry, not money."""

from __future__ import annotations

import datetime
from decimal import ROUND_HALF_UP, Decimal
from html import escape

# Colour-blind-safe (Okabe-Ito), each at 3:1 or more against white for the bars' edges.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 72, 12, 14, 40  # LEFT at the least: it widens for longer axis labels
DIGIT_PX = 10  # the width of a character of the axis' 17 px type (dashboard.css), a little over


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def stacked_bars(
    chart_id: str,
    title: str,
    days: list[datetime.date],
    series: dict[str, dict[str, Decimal]],  # model -> day (ISO) -> value
    label: str,  # how a value reads: "{} predictions" or "${}"
) -> str:
    totals = [
        sum((values.get(day.isoformat(), Decimal(0)) for values in series.values()), Decimal(0))
        for day in days
    ]
    peak = _nice(max(totals, default=Decimal(0)))
    ticks = [_short(peak * step / 4, label) for step in range(5)]
    left = max(LEFT, DIGIT_PX * max(len(tick) for tick in ticks) + 12)
    plot_w, plot_h = WIDTH - left - RIGHT, HEIGHT - TOP - BOTTOM
    slot = Decimal(plot_w) / max(len(days), 1)
    bar = slot * Decimal("0.7")
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" data-testid="{chart_id}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(_describe(days, totals, label))}</desc>',
    ]
    for step, tick in enumerate(ticks):
        y = TOP + plot_h - Decimal(plot_h) * step / 4
        parts.append(f'<line x1="{left}" x2="{WIDTH - RIGHT}" y1="{_px(y)}" y2="{_px(y)}" class="grid"/>')
        parts.append(
            f'<text x="{left - 6}" y="{_px(y + 4)}" class="axis" text-anchor="end">{escape(tick)}</text>'
        )
    every = max(1, -(-len(days) // 5))  # five labels at most: they must stay readable
    for index, day in enumerate(days):
        x = left + slot * index + (slot - bar) / 2
        base = Decimal(TOP + plot_h)
        for order, (model, values) in enumerate(series.items()):
            value = values.get(day.isoformat(), Decimal(0))
            if value <= 0 or peak <= 0:
                continue
            height = Decimal(plot_h) * value / peak
            base -= height
            tip = f"{day.isoformat()} {model}: {label.format(_plain(value, label))}"
            parts.append(
                f'<rect x="{_px(x)}" y="{_px(base)}" width="{_px(bar)}" height="{_px(height)}" '
                f'fill="{colour(order)}"><title>{escape(tip)}</title></rect>'
            )
        if index % every == 0:
            parts.append(
                f'<text x="{_px(x + bar / 2)}" y="{HEIGHT - BOTTOM + 22}" class="axis" text-anchor="middle">'
                f"{day.strftime('%b %d')}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _describe(days: list[datetime.date], totals: list[Decimal], label: str) -> str:
    if not days or not any(totals):
        return "Nothing in this period."
    busiest = max(range(len(days)), key=lambda i: totals[i])
    total = sum(totals, Decimal(0))
    return (
        f"{days[0].isoformat()} to {days[-1].isoformat()}: {label.format(_plain(total, label))} in all; "
        f"the most on {days[busiest].isoformat()}, {label.format(_plain(totals[busiest], label))}."
    )


def _nice(peak: Decimal) -> Decimal:
    """The axis' top: the peak rounded up to 1, 2 or 5 times a power of ten."""
    if peak <= 0:
        return Decimal(1)
    power = Decimal(10) ** (peak.adjusted())
    for step in (1, 2, 5, 10):
        if peak <= power * step:
            return power * step
    return power * 10


def _plain(value: Decimal, label: str) -> str:
    """A count as it is (2.5 on an axis); money half-up to the cent, or exactly below a cent, where
    cents would show a day of demo predictions, and every tick of its axis, as 0.00."""
    if value == value.to_integral_value():
        return str(int(value))
    if not label.startswith("$") or abs(value) < Decimal("0.01"):
        return format(value.normalize(), "f")
    return format(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP), "f")


def _short(value: Decimal, label: str) -> str:
    return ("$" if label.startswith("$") else "") + _plain(value, label)


def _px(value: Decimal | int) -> str:
    return format(Decimal(value).quantize(Decimal("0.1")), "f")
