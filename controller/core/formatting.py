"""The one percent formatter: every Slack message, CLI line and log text shows ratios the same way.

Three significant digits, at most two decimals, trailing zeros dropped: ``0.183`` → ``18.3%``,
``0.05`` → ``5%``, ``0.005`` → ``0.5%``, ``0.0012`` → ``0.12%``. Large shares keep a decimal that
matters (``18.4%`` of a 5xx burst), small ones (a canary's 0.5% increase allowed, a Wilson bound)
keep theirs, and a round threshold reads as it was written in the policy. Pure.
"""

from __future__ import annotations

import math

_SIGNIFICANT = 3
_MAX_DECIMALS = 2


def percent(ratio: float) -> str:
    """``ratio`` (0.183) as a percentage (``18.3%``); see the module docstring for the precision."""
    value = ratio * 100
    if not math.isfinite(value):
        return f"{value}%"
    if value == 0:
        return "0%"
    decimals = min(_MAX_DECIMALS, max(0, _SIGNIFICANT - 1 - math.floor(math.log10(abs(value)))))
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}%"
