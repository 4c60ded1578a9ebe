"""The wall clock: the one place the controller asks what time it is.

The pure core never reads a clock (time is an argument); the app and surface layers take a
``Clock`` and default it to :func:`utc_now`, so tests pass a fixed or simulated one instead.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)
