"""Latency statistics for judging revisions: Monitoring's bucket layouts and histogram percentiles.

Pure code: no I/O, no clock, no Google imports (only :mod:`math` and friends), so the decision core
can use it and it can be tested with properties rather than mocks. Error ratios with their
confidence bounds are in ``controller.core.ratios``.

*What is this revision's p95 latency?* Cloud Monitoring stores latencies as histograms
(``Distribution``: a bucket layout plus one count per bucket). A percentile must be computed from
the merged histogram of every series of the revision; a percentile of per-series percentiles is
not a percentile of anything. :class:`Histogram` merges histograms that share a layout and reads
percentiles from them by linear interpolation inside the bucket that holds the rank (see
:meth:`Histogram.percentile` for the exact rule).

Bucket layouts follow ``google.api.Distribution.BucketOptions`` exactly (bucket *i* is
``[lower, upper)``: lower bound inclusive, upper bound exclusive):

* linear ``(N, width, offset)``: N+2 buckets; bucket 0 is ``(-inf, offset)``, bucket i (1 ≤ i ≤ N)
  is ``[offset + width·(i-1), offset + width·i)``, bucket N+1 is ``[offset + width·N, +inf)``.
* exponential ``(N, growth_factor, scale)``: N+2 buckets; bucket 0 is ``(-inf, scale)``, bucket i
  (1 ≤ i ≤ N) is ``[scale·g^(i-1), scale·g^i)``, bucket N+1 is ``[scale·g^N, +inf)``.
* explicit ``(b_0 < … < b_{m-1})``: m+1 buckets; bucket 0 is ``(-inf, b_0)``, bucket i
  (1 ≤ i ≤ m-1) is ``[b_{i-1}, b_i)``, bucket m is ``[b_{m-1}, +inf)``.

The Monitoring adapter turns ``Distribution`` protos into these types (layout and counts), so this
module never imports Google code.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

__all__ = [
    "BucketOptions",
    "ExplicitBuckets",
    "ExponentialBuckets",
    "Histogram",
    "LinearBuckets",
    "bucket_bounds",
    "bucket_index",
    "merge_all",
    "num_buckets",
]

# A guard against layouts that would allocate absurd amounts of memory (the Monitoring API itself
# caps distributions far below this).
_MAX_BUCKETS = 100_000


# --------------------------------------------------------------------------------------------
# Bucket layouts
# --------------------------------------------------------------------------------------------


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")


@dataclass(frozen=True)
class LinearBuckets:
    """``N`` finite buckets of equal ``width`` starting at ``offset`` (plus under- and overflow)."""

    num_finite_buckets: int
    width: float
    offset: float

    def __post_init__(self) -> None:
        if not 1 <= self.num_finite_buckets <= _MAX_BUCKETS:
            raise ValueError(f"num_finite_buckets must be in 1..{_MAX_BUCKETS}, got {self.num_finite_buckets}")
        _check_finite("width", self.width)
        _check_finite("offset", self.offset)
        if self.width <= 0:
            raise ValueError(f"width must be > 0, got {self.width}")


@dataclass(frozen=True)
class ExponentialBuckets:
    """``N`` finite buckets whose bounds grow geometrically: ``scale·growth_factor^i``."""

    num_finite_buckets: int
    growth_factor: float
    scale: float

    def __post_init__(self) -> None:
        if not 1 <= self.num_finite_buckets <= _MAX_BUCKETS:
            raise ValueError(f"num_finite_buckets must be in 1..{_MAX_BUCKETS}, got {self.num_finite_buckets}")
        _check_finite("growth_factor", self.growth_factor)
        _check_finite("scale", self.scale)
        if self.growth_factor <= 1:
            raise ValueError(f"growth_factor must be > 1, got {self.growth_factor}")
        if self.scale <= 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        try:
            top = float(self.scale) * float(self.growth_factor) ** self.num_finite_buckets
        except OverflowError:
            top = math.inf
        if not math.isfinite(top):
            raise ValueError("the largest bucket bound overflows a float")


@dataclass(frozen=True)
class ExplicitBuckets:
    """Buckets between strictly increasing ``bounds`` (m bounds → m+1 buckets)."""

    bounds: tuple[float, ...]

    def __post_init__(self) -> None:
        # Accept any sequence but store a tuple, so the layout stays hashable and comparable.
        object.__setattr__(self, "bounds", tuple(float(b) for b in self.bounds))
        if not 1 <= len(self.bounds) <= _MAX_BUCKETS:
            raise ValueError(f"explicit buckets need 1..{_MAX_BUCKETS} bounds, got {len(self.bounds)}")
        for b in self.bounds:
            _check_finite("bound", b)
        if any(a >= b for a, b in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError(f"explicit bounds must be strictly increasing, got {self.bounds}")


BucketOptions = LinearBuckets | ExponentialBuckets | ExplicitBuckets


@lru_cache(maxsize=256)
def _edges(options: BucketOptions) -> tuple[float, ...]:
    """The finite bucket edges in increasing order: bucket i is ``[edges[i-1], edges[i])``.

    Every other function derives bucket boundaries from this one list, so that sorting a value
    into a bucket (:func:`bucket_index`) and reporting that bucket's bounds (:func:`bucket_bounds`)
    can never disagree through floating-point rounding.
    """
    if isinstance(options, LinearBuckets):
        return tuple(options.offset + options.width * i for i in range(options.num_finite_buckets + 1))
    if isinstance(options, ExponentialBuckets):
        return tuple(options.scale * options.growth_factor**i for i in range(options.num_finite_buckets + 1))
    return options.bounds


def num_buckets(options: BucketOptions) -> int:
    """Number of buckets including underflow and overflow (``len(bucket_counts)`` when complete)."""
    return len(_edges(options)) + 1


def bucket_bounds(options: BucketOptions) -> list[tuple[float, float]]:
    """``[(lower, upper), …]`` for every bucket; the open ends are ``-inf`` and ``inf``.

    A value v is counted in bucket i when ``lower <= v < upper``.
    """
    edges = _edges(options)
    lowers = (-math.inf, *edges)
    uppers = (*edges, math.inf)
    return list(zip(lowers, uppers, strict=True))


def bucket_index(options: BucketOptions, value: float) -> int:
    """The bucket a value is counted in (lower bound inclusive, upper exclusive)."""
    if math.isnan(value):
        raise ValueError("NaN cannot be put into a bucket")
    return bisect_right(_edges(options), value)


# --------------------------------------------------------------------------------------------
# Histograms
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Histogram:
    """Counts per bucket of one layout, optionally with the exact mean and squared deviations.

    ``counts`` always has :func:`num_buckets` entries: a shorter sequence is padded with zeros,
    exactly as the Monitoring API treats a short ``bucket_counts`` ("the remaining values are
    assumed to be 0"). ``mean`` and ``sum_of_squared_deviation`` are the Distribution fields of
    the same names when known (None otherwise); they are carried through :meth:`merge` but the
    percentile uses the buckets only.
    """

    options: BucketOptions
    counts: tuple[int, ...]
    mean: float | None = None
    sum_of_squared_deviation: float | None = field(default=None)

    def __post_init__(self) -> None:
        size = num_buckets(self.options)
        counts = tuple(int(c) for c in self.counts)
        if len(counts) > size:
            raise ValueError(f"{len(counts)} bucket counts for a layout of {size} buckets")
        if any(c < 0 for c in counts):
            raise ValueError(f"bucket counts must be >= 0, got {counts}")
        object.__setattr__(self, "counts", counts + (0,) * (size - len(counts)))

    # -- constructors ---------------------------------------------------------------------

    @classmethod
    def empty(cls, options: BucketOptions) -> Histogram:
        """A histogram with no values (count 0, mean 0)."""
        return cls(options=options, counts=(), mean=0.0, sum_of_squared_deviation=0.0)

    @classmethod
    def from_samples(cls, options: BucketOptions, samples: Iterable[float]) -> Histogram:
        """Bucket raw values; mean and sum of squared deviations are computed exactly."""
        values = [float(s) for s in samples]
        counts = [0] * num_buckets(options)
        for v in values:
            counts[bucket_index(options, v)] += 1
        if not values:
            return cls.empty(options)
        mean = math.fsum(values) / len(values)
        ssd = math.fsum((v - mean) ** 2 for v in values)
        return cls(options=options, counts=tuple(counts), mean=mean, sum_of_squared_deviation=ssd)

    # -- reading --------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Number of values in all buckets."""
        return sum(self.counts)

    def merge(self, other: Histogram) -> Histogram:
        """The histogram of both value sets: bucket counts add up.

        Both must use the same layout; anything else raises ValueError rather than re-binning,
        because re-binning invents where values lay inside a bucket, and Cloud Run reports one
        layout per metric, so a mismatch means the caller mixed up metrics.

        Mean and sum of squared deviations combine exactly (Chan et al.'s parallel formula):
        with δ = mean_b - mean_a, ``mean = mean_a + δ·n_b/n`` and
        ``ssd = ssd_a + ssd_b + δ²·n_a·n_b/n``. If either side does not know them, neither does
        the result (None); an empty side contributes nothing.
        """
        if other.options != self.options:
            raise ValueError(f"cannot merge histograms with different layouts: {self.options} vs {other.options}")
        counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        n_a, n_b = self.count, other.count
        mean_a, mean_b = self.mean, other.mean
        ssd_a, ssd_b = self.sum_of_squared_deviation, other.sum_of_squared_deviation
        mean: float | None
        ssd: float | None
        if n_b == 0:
            mean, ssd = mean_a, ssd_a
        elif n_a == 0:
            mean, ssd = mean_b, ssd_b
        elif mean_a is None or mean_b is None or ssd_a is None or ssd_b is None:
            mean, ssd = None, None
        else:
            n = n_a + n_b
            delta = mean_b - mean_a
            mean = mean_a + delta * n_b / n
            ssd = ssd_a + ssd_b + delta * delta * n_a * n_b / n
        return Histogram(options=self.options, counts=counts, mean=mean, sum_of_squared_deviation=ssd)

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0 ≤ q ≤ 100) by linear interpolation inside a bucket; None if empty.

        The rule, with n = :attr:`count` and C_i the cumulative count of buckets 0..i:

        1. ``rank = q/100 · n`` (a real number in [0, n]).
        2. The bucket is the first i with ``C_i >= rank`` and a non-zero count (for rank 0 that is
           the first non-empty bucket).
        3. ``fraction = (rank - C_{i-1}) / count_i`` ∈ [0, 1]: how far into the bucket's values the
           rank lies, assuming the values are spread evenly across the bucket.
        4. Finite bucket ``[lower, upper)``: return ``lower + fraction·(upper - lower)``.
           Underflow bucket ``(-inf, upper)``: return ``upper``. Overflow bucket
           ``[lower, inf)``: return ``lower``. Open-ended buckets never yield a value beyond the
           finite bound; a p95 in the overflow bucket therefore reads as "at least ``lower``",
           which errs towards *not* inventing latency.

        The result always lies in the closed bucket that holds the ⌈rank⌉-th smallest value (for
        rank > 0); merge histograms first and take the percentile of the merge, never the other
        way round.
        """
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile must be within 0..100, got {q}")
        total = self.count
        if total == 0:
            return None
        rank = q / 100.0 * total
        # rank <= total, so the loop always stops at a non-empty bucket; the defaults only make
        # that visible to the type checker.
        chosen, below = len(self.counts) - 1, 0  # bucket i and C_{i-1}
        running = 0
        for i, c in enumerate(self.counts):
            if c > 0 and running + c >= rank:
                chosen, below = i, running
                break
            running += c
        lower, upper = bucket_bounds(self.options)[chosen]
        if math.isinf(lower):
            return upper
        if math.isinf(upper):
            return lower
        fraction = min(1.0, max(0.0, (rank - below) / self.counts[chosen]))
        return lower + fraction * (upper - lower)


def merge_all(histograms: Sequence[Histogram]) -> Histogram | None:
    """Merge a list of same-layout histograms (None for an empty list)."""
    if not histograms:
        return None
    result = histograms[0]
    for h in histograms[1:]:
        result = result.merge(h)
    return result
