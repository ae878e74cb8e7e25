"""The dashboard's charts are SVG a screen reader can name and describe: one segment per model and
day with a tooltip, the axis topped at a round number, and a plain sentence when there is nothing."""

from __future__ import annotations

import datetime
import re
from decimal import Decimal

from proxy.dashboard.charts import stacked_bars

DAYS = [datetime.date(2026, 3, 1) + datetime.timedelta(days=n) for n in range(3)]


def test_each_model_and_day_is_a_segment_with_its_number_and_the_chart_is_described() -> None:
    series = {
        "modelfolio/digits": {"2026-03-01": Decimal(3), "2026-03-03": Decimal(7)},
        "modelfolio/cats": {"2026-03-03": Decimal(2)},
    }
    svg = stacked_bars("p", "Predictions per day", DAYS, series, "{} predictions")

    assert (
        svg.startswith('<svg class="chart"')
        and 'role="img"' in svg
        and 'aria-labelledby="p-title p-desc"' in svg
    )
    assert re.findall(r"<title>([^<]+)</title></rect>", svg) == [
        "2026-03-01 modelfolio/digits: 3 predictions",
        "2026-03-03 modelfolio/digits: 7 predictions",
        "2026-03-03 modelfolio/cats: 2 predictions",
    ]
    assert "2026-03-01 to 2026-03-03: 12 predictions in all; the most on 2026-03-03, 9 predictions." in svg
    assert ">10</text>" in svg  # the axis' top: 9 rounded up to 10


def test_money_reads_as_dollars_rounded_half_up_to_the_cent() -> None:
    svg = stacked_bars("r", "Revenue per day", DAYS, {"m": {"2026-03-02": Decimal("0.125")}}, "${}")
    assert "2026-03-02 m: $0.13" in svg and "e-" not in svg


def test_money_below_a_cent_reads_exactly_on_the_segments_and_the_axis() -> None:
    svg = stacked_bars("r", "Revenue per day", DAYS, {"m": {"2026-03-02": Decimal("0.0000525")}}, "${}")
    assert "2026-03-02 m: $0.0000525" in svg and "e-" not in svg
    ticks = re.findall(r'class="axis" text-anchor="end">([^<]+)</text>', svg)
    assert ticks == ["$0", "$0.000025", "$0.00005", "$0.000075", "$0.0001"]


def test_an_empty_period_says_so() -> None:
    svg = stacked_bars("e", "Predictions per day", DAYS, {}, "{} predictions")
    assert "Nothing in this period." in svg and "<rect" not in svg
