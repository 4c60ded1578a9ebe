"""Evidence before action, in values: windows, per-revision numbers, and how they combine. Pure.

Before the controller acts on an alert it checks the alert's claim against Cloud Monitoring's own
per-revision numbers. This module holds what that check is made of, with no client library and no
clock (``now`` is an argument):

* :class:`Window`: a read interval ``(start, end]``, built by :func:`trailing_window` (the last N
  minutes, optionally lagging for late points) or :func:`revision_window_before` (a baseline just
  before a revision took traffic); :func:`alignment_period` rounds it up to whole minutes;
* :class:`RevisionNumbers`: requests, 5xx errors and their Wilson bounds, merged-latency
  percentiles (never a percentile of percentiles) and failed probe attempts of one revision;
* :class:`Evidence`: those numbers for every revision of one service over one window, combined from
  the per-signal answers by :func:`build_evidence`.

The requests and the reading of their answers are :mod:`controller.core.timeseries`; the I/O is
:mod:`controller.adapters.monitoring`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Literal, Self

from pydantic import model_validator

from controller.core.ratios import ratio
from controller.core.state import Frozen
from controller.core.stats import Histogram

__all__ = [
    "ALL_SIGNALS",
    "Evidence",
    "RevisionNumbers",
    "Signal",
    "Window",
    "alignment_period",
    "build_evidence",
    "revision_window_before",
    "trailing_window",
]

Signal = Literal["error_rate", "latency", "health"]
ALL_SIGNALS: frozenset[str] = frozenset({"error_rate", "latency", "health"})

# --------------------------------------------------------------------------------------------
# Value objects
# --------------------------------------------------------------------------------------------


class Window(Frozen):
    """A time window ``(start, end]`` (Monitoring's read interval); both ends timezone-aware."""

    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.start >= self.end:
            raise ValueError(f"window start {self.start.isoformat()} is not before its end {self.end.isoformat()}")
        return self

    @property
    def length(self) -> timedelta:
        return self.end - self.start


class RevisionNumbers(Frozen):
    """What Cloud Monitoring says about one revision over one window.

    ``error_ratio`` is 0.0 with no requests, and its Wilson bounds are then the uninformative
    [0, 1]: look at ``requests`` before concluding anything. Percentiles come from the merged
    latency distribution and are None without latency data. ``health_failures`` is None when
    health was not queried.
    """

    revision: str
    requests: int
    errors: int
    error_ratio: float
    error_ratio_lower: float
    error_ratio_upper: float
    latency_count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    health_failures: int | None

    @classmethod
    def build(
        cls,
        revision: str,
        *,
        requests: int = 0,
        errors: int = 0,
        latency: Histogram | None = None,
        health_failures: int | None = None,
    ) -> RevisionNumbers:
        """Derive the ratio, its bounds and the percentiles from raw counts and a merged histogram."""
        r = ratio(errors, requests)
        count = latency.count if latency is not None else 0

        def pct(q: float) -> float | None:
            return latency.percentile(q) if latency is not None and count else None

        return cls(
            revision=revision,
            requests=requests,
            errors=errors,
            error_ratio=r.value,
            error_ratio_lower=r.lower,
            error_ratio_upper=r.upper,
            latency_count=count,
            p50_ms=pct(50.0),
            p95_ms=pct(95.0),
            p99_ms=pct(99.0),
            health_failures=health_failures,
        )


class Evidence(Frozen):
    """Per-revision numbers for one service over one window.

    ``revisions`` holds every revision with data in any queried signal; a revision without any
    series is absent, which means zero requests (Monitoring writes no points for idle revisions).
    ``calls`` counts ListTimeSeries attempts, pages and retries included (one per signal when
    all goes well). ``signals`` records what was queried, so :meth:`get` can tell "no probe
    failures" (0) from "probes not queried" (None); it defaults to all three.
    """

    window: Window
    revisions: dict[str, RevisionNumbers]
    calls: int
    signals: frozenset[str] = ALL_SIGNALS

    def get(self, revision: str) -> RevisionNumbers:
        """The revision's numbers; zeros (no requests, no latency data) when it has no series."""
        found = self.revisions.get(revision)
        if found is not None:
            return found
        return RevisionNumbers.build(revision, health_failures=0 if "health" in self.signals else None)


# --------------------------------------------------------------------------------------------
# Pure helpers: windows
# --------------------------------------------------------------------------------------------


def _aware(name: str, moment: datetime) -> None:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment!r}")


def trailing_window(now: datetime, length: timedelta, lag: timedelta = timedelta(0)) -> Window:
    """The ``length`` long window ending ``lag`` before ``now``.

    Cloud Run metrics become visible up to 2–3 minutes after the fact, so a caller that wants
    complete buckets passes a lag; one that prefers fresh but partial data passes none.
    """
    _aware("now", now)
    if length <= timedelta(0):
        raise ValueError(f"window length must be positive, got {length}")
    if lag < timedelta(0):
        raise ValueError(f"lag must not be negative, got {lag}")
    end = now - lag
    return Window(start=end - length, end=end)


def revision_window_before(created: datetime, length: timedelta) -> Window:
    """The ``length`` long window that ends when a revision started taking traffic.

    Used for a baseline: how the service behaved just before the suspect revision arrived.
    """
    _aware("created", created)
    if length <= timedelta(0):
        raise ValueError(f"window length must be positive, got {length}")
    return Window(start=created - length, end=created)


def alignment_period(window: Window) -> timedelta:
    """The window's length rounded *up* to whole minutes, at least 60 s (Monitoring's minimum).

    Rounding up (not down) means one alignment bucket can hold the whole window; a window that
    is not minute-aligned still straddles two buckets, which is why every point is summed.
    """
    seconds = window.length.total_seconds()
    minutes = max(1, math.ceil(seconds / 60.0 - 1e-9))
    return timedelta(minutes=minutes)


def build_evidence(
    window: Window,
    signals: frozenset[str],
    calls: int,
    *,
    counts: Mapping[str, tuple[int, int]] | None = None,
    latencies: Mapping[str, Histogram] | None = None,
    health: Mapping[str, int] | None = None,
) -> Evidence:
    """Combine per-signal results into :class:`Evidence` (one entry per revision with any data)."""
    counts = counts or {}
    latencies = latencies or {}
    health = health or {}
    names = sorted(set(counts) | set(latencies) | set(health))
    with_health = "health" in signals
    revisions = {
        name: RevisionNumbers.build(
            name,
            requests=counts.get(name, (0, 0))[0],
            errors=counts.get(name, (0, 0))[1],
            latency=latencies.get(name),
            health_failures=health.get(name, 0) if with_health else None,
        )
        for name in names
    }
    return Evidence(window=window, revisions=revisions, calls=calls, signals=signals)
