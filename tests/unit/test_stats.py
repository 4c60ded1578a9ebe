"""Tests for controller.stats: Wilson intervals, bucket layouts, histogram percentiles and merging."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.core.ratios import (
    ratio,
    wilson_interval,
)
from controller.core.stats import (
    BucketOptions,
    ExplicitBuckets,
    ExponentialBuckets,
    Histogram,
    LinearBuckets,
    bucket_bounds,
    bucket_index,
    merge_all,
    num_buckets,
)

# The exact 97.5 % normal quantile (scipy.stats.norm.ppf(0.975)), which statsmodels' and R's
# Wilson intervals use; with it the bounds below are the textbook ones.
Z975 = 1.959963984540054

# --------------------------------------------------------------------------------------------
# Wilson interval
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "trials", "lower", "upper"),
    [
        # 5 of 10: the classic (0.2366, 0.7634) example.
        pytest.param(5, 10, 0.2365930905, 0.7634069095, id="5-of-10"),
        # 0 of n: the upper bound has the closed form z²/(n + z²) = 0.27753... for n = 10.
        pytest.param(0, 10, 0.0, Z975**2 / (10 + Z975**2), id="0-of-10"),
        # n of n mirrors it: lower bound n/(n + z²).
        pytest.param(10, 10, 10 / (10 + Z975**2), 1.0, id="10-of-10"),
        pytest.param(1, 1000, 0.000176546, 0.005642559, id="1-of-1000"),
    ],
)
def test_wilson_known_values(successes: int, trials: int, lower: float, upper: float) -> None:
    got_lower, got_upper = wilson_interval(successes, trials, Z975)
    assert got_lower == pytest.approx(lower, abs=1e-9)
    assert got_upper == pytest.approx(upper, abs=1e-9)


def test_wilson_no_trials_is_uninformative() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("successes", "trials"), [(-1, 10), (11, 10), (0, -1)])
def test_wilson_rejects_impossible_counts(successes: int, trials: int) -> None:
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(successes, trials)


@pytest.mark.parametrize("z", [0.0, -1.0, math.inf, math.nan])
def test_wilson_rejects_bad_z(z: float) -> None:
    with pytest.raises(ValueError, match="z must be"):
        wilson_interval(1, 10, z)


@given(trials=st.integers(1, 100_000), data=st.data())
def test_wilson_bounds_solve_the_score_equation(trials: int, data: st.DataObject) -> None:
    """The definition, checked independently of the closed form: each bound p strictly inside
    (0, 1) satisfies n·(p̂ - p)² = z²·p·(1 - p), and p̂ lies between the bounds."""
    successes = data.draw(st.integers(0, trials))
    lower, upper = wilson_interval(successes, trials, Z975)
    p_hat = successes / trials
    assert 0.0 <= lower <= p_hat <= upper <= 1.0
    for p in (lower, upper):
        if 0.0 < p < 1.0:
            lhs = trials * (p_hat - p) ** 2
            rhs = Z975**2 * p * (1.0 - p)
            assert lhs == pytest.approx(rhs, rel=1e-6, abs=1e-12)


@given(successes=st.integers(0, 1000), extra=st.integers(0, 1000), factor=st.integers(2, 50))
def test_wilson_narrows_with_more_trials_at_the_same_ratio(successes: int, extra: int, factor: int) -> None:
    trials = successes + extra
    if trials == 0:
        trials = 1
    small = wilson_interval(successes, trials)
    large = wilson_interval(successes * factor, trials * factor)
    assert large[1] - large[0] < small[1] - small[0]


def test_wilson_widens_with_z() -> None:
    narrow = wilson_interval(3, 20, z=1.0)
    wide = wilson_interval(3, 20, z=3.0)
    assert wide[0] < narrow[0] and narrow[1] < wide[1]


def test_ratio_carries_value_and_bounds() -> None:
    r = ratio(2, 20)
    assert (r.errors, r.requests, r.value) == (2, 20, 0.1)
    assert (r.lower, r.upper) == wilson_interval(2, 20)
    # 10 % observed, but 2 of 20 cannot prove a rate above 5 % (lower bound ≈ 2.8 %)…
    assert not r.lower > 0.05
    # …while 100 of 1000 can (lower bound ≈ 8.3 %).
    assert ratio(100, 1000).lower > 0.05
    assert ratio(0, 1000).upper < 0.01


def test_ratio_without_requests() -> None:
    r = ratio(0, 0)
    assert (r.value, r.lower, r.upper) == (0.0, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Bucket layouts
# --------------------------------------------------------------------------------------------

INF = math.inf


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(
            LinearBuckets(num_finite_buckets=3, width=10, offset=5),
            [(-INF, 5), (5, 15), (15, 25), (25, 35), (35, INF)],
            id="linear",
        ),
        pytest.param(
            # The layout of the wire sample 03b-…-raw-distribution.json.
            ExponentialBuckets(num_finite_buckets=3, growth_factor=10, scale=10),
            [(-INF, 10), (10, 100), (100, 1000), (1000, 10000), (10000, INF)],
            id="exponential",
        ),
        pytest.param(
            ExplicitBuckets(bounds=(1, 2, 5)),
            [(-INF, 1), (1, 2), (2, 5), (5, INF)],
            id="explicit",
        ),
    ],
)
def test_bucket_bounds_follow_the_monitoring_api(options: BucketOptions, expected: list[tuple[float, float]]) -> None:
    assert bucket_bounds(options) == expected
    assert num_buckets(options) == len(expected)


@pytest.mark.parametrize(
    ("value", "index"),
    [(-1e9, 0), (4.999, 0), (5.0, 1), (14.999, 1), (15.0, 2), (34.999, 3), (35.0, 4), (INF, 4)],
)
def test_bucket_index_lower_bound_inclusive(value: float, index: int) -> None:
    assert bucket_index(LinearBuckets(3, 10, 5), value) == index


def test_bucket_index_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        bucket_index(LinearBuckets(3, 10, 5), math.nan)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LinearBuckets(0, 1, 0),
        lambda: LinearBuckets(3, 0, 0),
        lambda: LinearBuckets(3, math.inf, 0),
        lambda: ExponentialBuckets(3, 1.0, 1),
        lambda: ExponentialBuckets(3, 2, 0),
        lambda: ExponentialBuckets(5000, 10, 1),  # 10^5000 overflows
        lambda: ExplicitBuckets(()),
        lambda: ExplicitBuckets((1, 1)),
        lambda: ExplicitBuckets((2, 1)),
    ],
)
def test_invalid_layouts_are_rejected(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the messages differ per field
        make()


# --------------------------------------------------------------------------------------------
# Histogram: percentiles
# --------------------------------------------------------------------------------------------

# A Distribution as Monitoring returns it (count 120, exponential 3 x10 from 10), in our types.
WIRE_SAMPLE = Histogram(
    options=ExponentialBuckets(3, 10, 10), counts=(0, 20, 90, 8, 2), mean=245.3, sum_of_squared_deviation=1900000.0
)


def test_percentiles_of_the_wire_sample() -> None:
    h = WIRE_SAMPLE
    assert h.count == 120
    assert h.mean == 245.3
    # p50: rank 60; buckets 0..1 hold 20, so bucket 2 [100, 1000) holds ranks 21..110 and
    # 60 lies 40/90 of the way in: 100 + 40/90·900 = 500.
    assert h.percentile(50) == pytest.approx(500.0)
    # p95: rank 114 lies in bucket 3 [1000, 10000) (ranks 111..118), 4/8 of the way: 5500.
    assert h.percentile(95) == pytest.approx(5500.0)
    # p99: rank 118.8 is in the overflow bucket [10000, inf): reported as its lower bound.
    assert h.percentile(99) == 10000.0


@pytest.mark.parametrize(
    ("options", "counts", "q", "expected"),
    [
        # linear (2, 10, 0): buckets (-inf,0) [0,10) [10,20) [20,inf); 10 values in [0,10)
        pytest.param(LinearBuckets(2, 10, 0), (0, 10, 0, 0), 50, 5.0, id="linear-middle"),
        pytest.param(LinearBuckets(2, 10, 0), (0, 10, 10, 0), 75, 15.0, id="linear-second-bucket"),
        pytest.param(LinearBuckets(2, 10, 0), (0, 10, 0, 0), 100, 10.0, id="linear-q100-upper-bound"),
        pytest.param(LinearBuckets(2, 10, 0), (0, 0, 10, 0), 0, 10.0, id="q0-skips-empty-buckets"),
        pytest.param(LinearBuckets(2, 10, 0), (5, 0, 0, 5), 10, 0.0, id="underflow-gives-upper-bound"),
        pytest.param(LinearBuckets(2, 10, 0), (5, 0, 0, 5), 90, 20.0, id="overflow-gives-lower-bound"),
        pytest.param(ExponentialBuckets(2, 2, 1), (0, 4, 4, 0), 75, 3.0, id="exponential"),
        pytest.param(ExplicitBuckets((1, 3, 7)), (0, 0, 8, 0), 25, 4.0, id="explicit"),
        # A rank exactly at a bucket's cumulative count stays in that bucket (its upper bound),
        # it does not jump into the next non-empty bucket.
        pytest.param(ExplicitBuckets((1, 3, 7)), (0, 5, 0, 5), 50, 3.0, id="rank-at-boundary"),
    ],
)
def test_percentile_interpolation(options: BucketOptions, counts: tuple[int, ...], q: float, expected: float) -> None:
    assert Histogram(options, counts).percentile(q) == pytest.approx(expected)


def test_percentile_of_nothing_is_none() -> None:
    assert Histogram.empty(LinearBuckets(2, 10, 0)).percentile(95) is None


@pytest.mark.parametrize("q", [-0.1, 100.1, math.nan])
def test_percentile_rejects_q_outside_0_100(q: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        Histogram(LinearBuckets(2, 10, 0), (0, 1)).percentile(q)


def test_short_bucket_counts_are_padded_and_long_ones_rejected() -> None:
    h = Histogram(LinearBuckets(2, 10, 0), (0, 3))
    assert h.counts == (0, 3, 0, 0)
    with pytest.raises(ValueError, match="5 bucket counts"):
        Histogram(LinearBuckets(2, 10, 0), (0, 0, 0, 0, 1))
    with pytest.raises(ValueError, match=">= 0"):
        Histogram(LinearBuckets(2, 10, 0), (0, -1))


# --------------------------------------------------------------------------------------------
# Histogram: merging
# --------------------------------------------------------------------------------------------


@given(
    a=st.lists(st.floats(0.1, 60_000), max_size=200),
    b=st.lists(st.floats(0.1, 60_000), max_size=200),
)
def test_merge_equals_bucketing_everything_at_once(a: list[float], b: list[float]) -> None:
    layout = ExponentialBuckets(100, 1.4, 1.0)
    merged = Histogram.from_samples(layout, a).merge(Histogram.from_samples(layout, b))
    whole = Histogram.from_samples(layout, a + b)
    assert merged.counts == whole.counts
    assert merged.count == len(a) + len(b)
    assert merged.mean == pytest.approx(whole.mean, rel=1e-9, abs=1e-9)
    assert merged.sum_of_squared_deviation == pytest.approx(whole.sum_of_squared_deviation, rel=1e-6, abs=1e-3)


def test_merge_requires_the_same_layout() -> None:
    with pytest.raises(ValueError, match="different layouts"):
        Histogram(LinearBuckets(2, 10, 0), ()).merge(Histogram(LinearBuckets(2, 20, 0), ()))


def test_merge_forgets_an_unknown_mean() -> None:
    layout = LinearBuckets(2, 10, 0)
    known = Histogram.from_samples(layout, [1.0, 2.0])
    unknown = Histogram(layout, (0, 1))
    assert known.merge(unknown).mean is None
    # …but an empty side changes nothing.
    assert known.merge(Histogram(layout, ())).mean == 1.5


def test_merge_all() -> None:
    layout = LinearBuckets(2, 10, 0)
    parts = [Histogram(layout, (0, 1)), Histogram(layout, (0, 0, 2)), Histogram(layout, (1,))]
    merged = merge_all(parts)
    assert merged is not None
    assert merged.counts == (1, 1, 2, 0)
    assert merge_all([]) is None


def test_merged_percentile_is_not_a_percentile_of_percentiles() -> None:
    """Why the module insists on merging: 1000 fast requests and 10 slow ones have a fast p95,
    but averaging each series' p95 would report a slow one."""
    layout = ExponentialBuckets(100, 1.4, 1.0)
    fast = Histogram.from_samples(layout, [50.0] * 1000)
    slow = Histogram.from_samples(layout, [5000.0] * 10)
    merged_p95 = fast.merge(slow).percentile(95)
    fast_p95, slow_p95 = fast.percentile(95), slow.percentile(95)
    assert merged_p95 is not None and fast_p95 is not None and slow_p95 is not None
    assert merged_p95 < 100
    assert (fast_p95 + slow_p95) / 2 > 2000


# --------------------------------------------------------------------------------------------
# Property: agreement with numpy.percentile
# --------------------------------------------------------------------------------------------
#
# The statement tested, for n sorted samples s[0..n-1] and 0 < q ≤ 100:
#
#   numpy.percentile(samples, q) (its default "linear" method) interpolates between a = s[⌊h⌋]
#   and b = s[⌈h⌉] with h = (n-1)·q/100. Let A and B be the buckets holding a and b. Then both
#   numpy's value and Histogram.percentile(q) lie in [lower(A), upper(B)], hence
#
#       |Histogram.percentile(q) - numpy.percentile(samples, q)| <= upper(B) - lower(A),
#
#   and in the common case A == B the difference is at most the width of that one bucket.
#
# Why it holds: the histogram's rank r = q/100·n selects the bucket holding the ⌈r⌉-th smallest
# value s[⌈r⌉-1], and ⌊h⌋ ≤ ⌈r⌉-1 ≤ ⌈h⌉ because h = r - q/100 with 0 < q/100 ≤ 1; buckets are
# ordered, so A ≤ that bucket ≤ B, and the estimate stays inside its (closed) bucket.
#
# A and B may be far apart when the buckets between them are empty (e.g. 19 values of 1 ms and
# one of 1000 ms: numpy's p95 is 50.95 ms, in an empty bucket); no bucket-based estimate can do
# better there, which is why the bound is stated over [lower(A), upper(B)] and not as "one width".
#
# Open-ended buckets have no width. The first property keeps every sample in a finite bucket
# (layouts are drawn to cover [0.1, 60000]); the second allows under/overflow and replaces each
# infinite end by the finite end of the same bucket, matching the rule that an open bucket is
# reported at its finite bound.

SAMPLE_MIN, SAMPLE_MAX = 0.1, 60_000.0


@st.composite
def covering_layouts(draw: st.DrawFn) -> BucketOptions:
    """A random layout whose finite buckets cover [0.1, 60000]."""
    kind = draw(st.sampled_from(["linear", "exponential", "explicit"]))
    extra = draw(st.integers(0, 3))
    if kind == "linear":
        offset = draw(st.floats(0.0, SAMPLE_MIN))
        width = draw(st.floats(30.0, 30_000.0))
        n = math.floor((SAMPLE_MAX - offset) / width) + 1 + extra
        return LinearBuckets(n, width, offset)
    if kind == "exponential":
        scale = draw(st.floats(0.001, SAMPLE_MIN))
        growth = draw(st.floats(1.05, 5.0))
        n = math.floor(math.log(SAMPLE_MAX / scale) / math.log(growth)) + 1 + extra
        return ExponentialBuckets(n, growth, scale)
    inner = draw(st.lists(st.floats(SAMPLE_MIN, SAMPLE_MAX, exclude_min=True, exclude_max=True), max_size=300))
    return ExplicitBuckets(tuple(sorted({SAMPLE_MIN, *inner, SAMPLE_MAX + 1.0})))


@st.composite
def any_layouts(draw: st.DrawFn) -> BucketOptions:
    """A random layout that may leave samples in the underflow or overflow bucket."""
    kind = draw(st.sampled_from(["linear", "exponential", "explicit"]))
    if kind == "linear":
        return LinearBuckets(
            draw(st.integers(1, 500)), draw(st.floats(1.0, 10_000.0)), draw(st.floats(-100.0, 5_000.0))
        )
    if kind == "exponential":
        return ExponentialBuckets(draw(st.integers(1, 80)), draw(st.floats(1.05, 4.0)), draw(st.floats(0.01, 500.0)))
    bounds = draw(st.lists(st.floats(0.0, 70_000.0), min_size=1, max_size=100, unique=True))
    return ExplicitBuckets(tuple(sorted(bounds)))


@st.composite
def sample_sets(draw: st.DrawFn, options: BucketOptions) -> list[float]:
    """50..5000 latencies in [0.1, 60000] ms with shapes that stress different cases."""
    n = draw(st.integers(50, 5000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = draw(st.sampled_from(["uniform", "lognormal", "clusters", "on-edges"]))
    if shape == "uniform":
        values = rng.uniform(SAMPLE_MIN, SAMPLE_MAX, n)
    elif shape == "lognormal":  # latency-like: most fast, a long slow tail
        values = rng.lognormal(mean=draw(st.floats(0.0, 9.0)), sigma=draw(st.floats(0.1, 2.5)), size=n)
    elif shape == "clusters":  # few distinct values: empty buckets between them, many ties
        centres = rng.uniform(SAMPLE_MIN, SAMPLE_MAX, draw(st.integers(1, 4)))
        values = rng.choice(centres, n)
    else:  # values exactly on bucket edges: the lower-inclusive rule matters
        edges = [b for lo, hi in bucket_bounds(options) for b in (lo, hi) if SAMPLE_MIN <= b <= SAMPLE_MAX]
        pool = np.array(edges or [SAMPLE_MIN])
        values = rng.choice(pool, n)
    return [float(v) for v in np.clip(values, SAMPLE_MIN, SAMPLE_MAX)]


def _tolerance(*values: float) -> float:
    return 1e-9 * max(1.0, *(abs(v) for v in values if math.isfinite(v)))


def _numpy_neighbours(samples: Sequence[float], q: float) -> tuple[float, float, float]:
    ordered = sorted(samples)
    h = (len(ordered) - 1) * q / 100.0
    return float(np.percentile(samples, q)), ordered[math.floor(h)], ordered[math.ceil(h)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), q=st.sampled_from([50.0, 90.0, 95.0, 99.0]))
def test_percentile_within_a_bucket_of_numpy(data: st.DataObject, q: float) -> None:
    options = data.draw(covering_layouts())
    samples = data.draw(sample_sets(options))
    estimate = Histogram.from_samples(options, samples).percentile(q)
    assert estimate is not None
    reference, a, b = _numpy_neighbours(samples, q)

    bounds = bucket_bounds(options)
    low, _ = bounds[bucket_index(options, a)]
    _, high = bounds[bucket_index(options, b)]
    assert math.isfinite(low) and math.isfinite(high), "the layout must cover every sample"
    eps = _tolerance(low, high)
    assert low - eps <= reference <= high + eps
    assert low - eps <= estimate <= high + eps
    # When a and b share a bucket (the usual case), high - low is exactly that bucket's width.
    assert abs(estimate - reference) <= high - low + eps


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), q=st.sampled_from([50.0, 95.0, 99.0]))
def test_percentile_with_open_buckets_stays_at_finite_bounds(data: st.DataObject, q: float) -> None:
    options = data.draw(any_layouts())
    samples = data.draw(sample_sets(options))
    estimate = Histogram.from_samples(options, samples).percentile(q)
    assert estimate is not None and math.isfinite(estimate)
    _, a, b = _numpy_neighbours(samples, q)

    bounds = bucket_bounds(options)
    low_a, high_a = bounds[bucket_index(options, a)]
    low_b, high_b = bounds[bucket_index(options, b)]
    low = high_a if math.isinf(low_a) else low_a  # underflow bucket → its upper bound
    high = low_b if math.isinf(high_b) else high_b  # overflow bucket → its lower bound
    eps = _tolerance(low, high)
    assert low - eps <= estimate <= high + eps
