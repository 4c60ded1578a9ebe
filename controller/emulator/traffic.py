"""A traffic simulator: emulated revisions' metrics follow the emulated service's traffic split.

The Monitoring emulator only answers with what was written to it. This module writes what Cloud
Run would report for a service whose revisions behave as configured (:class:`RevisionProfile`),
minute by minute on a simulated clock, reading the service's *current* traffic split from the
Cloud Run emulator each minute. So when the controller moves traffic back to a good revision, the
numbers Cloud Monitoring reports for the following minutes really recover — the whole loop (alert →
evidence → rollback → recovery) can run locally.

Per simulated minute ``[now, now + 60 s]`` and per revision serving a share of traffic:

* requests: that share of ``requests_per_minute`` (largest-remainder rounding, so shares sum to
  the total exactly);
* 5xx responses: a binomial draw with the profile's ``error_rate`` (seeded RNG, see
  :func:`binomial`);
* ``run.googleapis.com/request_count`` DELTA points per ``response_code_class`` ("2xx" with
  ``response_code`` "200", "5xx" with "503"), only for classes with requests;
* ``run.googleapis.com/request_latencies``: one distribution per response class in Cloud Run's
  bucket layout (:data:`~controller.emulator.monitoring.CLOUD_RUN_LATENCY_BUCKETS`), from
  lognormal samples with the profile's median and shape. At most :data:`MAX_LATENCY_SAMPLES` are
  drawn per revision and minute and the bucket counts are scaled up to the real request count
  (largest remainder: the distribution's count equals the class's request count exactly; mean
  is the samples' mean, the squared deviations are scaled by the same factor). This bounds the
  work per minute whatever the request rate, at the cost of a coarser tail at high rates;
* ``run.googleapis.com/container/completed_probe_attempt_count``: healthy attempts (a probe every
  10 s) and, when the profile says so, failed attempts (``is_healthy = false``).

Revisions with no share get no points, as an idle Cloud Run revision reports nothing — which the
Monitoring adapter reads as zero requests. Traffic is read from ``trafficStatuses`` (what is
actually routed; it lags ``traffic`` while an update's operation runs) with LATEST resolved to the
latest Ready revision.

The simulator keeps no raw samples and no history beyond per-revision running totals; the points
themselves live in the Monitoring emulator. It is not thread-safe: drive it from one thread.
Only the standard library is used (``random.Random``), so runs are reproducible from ``seed`` on
every supported Python version.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.core.stats import Histogram, bucket_index, num_buckets
from controller.emulator.cloudrun import SAMPLE_PROJECT, SAMPLE_REGION, SAMPLE_SERVICE, CloudRunEmulator
from controller.emulator.monitoring import CLOUD_RUN_LATENCY_BUCKETS, MonitoringEmulator

__all__ = [
    "MAX_LATENCY_SAMPLES",
    "RevisionProfile",
    "RevisionTotals",
    "TrafficSimulator",
    "binomial",
    "scale_counts",
    "split_requests",
]

REQUEST_COUNT = "run.googleapis.com/request_count"
REQUEST_LATENCIES = "run.googleapis.com/request_latencies"
PROBE_ATTEMPTS = "run.googleapis.com/container/completed_probe_attempt_count"

#: Latency samples drawn per revision and simulated minute at most (see the module docstring).
MAX_LATENCY_SAMPLES = 2000
#: Longest single advance: a week of minutes. Keeps every loop visibly bounded.
MAX_MINUTES = 7 * 24 * 60
_MINUTE = timedelta(minutes=1)
_PROBES_PER_MINUTE = 6  # a liveness probe every 10 s
# Below this many trials the binomial is drawn exactly, one Bernoulli trial each.
_EXACT_BINOMIAL_TRIALS = 1000
_CLASSES = (("2xx", "200"), ("5xx", "503"))


@dataclass
class RevisionProfile:
    """How a revision behaves: share of 5xx, latency (lognormal: median and shape), probe failures."""

    error_rate: float = 0.0
    latency_ms: float = 100.0
    latency_sigma: float = 0.5
    probe_failures_per_minute: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be within 0..1, got {self.error_rate}")
        if not (self.latency_ms > 0 and math.isfinite(self.latency_ms)):
            raise ValueError(f"latency_ms must be positive, got {self.latency_ms}")
        if not (self.latency_sigma >= 0 and math.isfinite(self.latency_sigma)):
            raise ValueError(f"latency_sigma must be >= 0, got {self.latency_sigma}")
        if self.probe_failures_per_minute < 0:
            raise ValueError(f"probe_failures_per_minute must be >= 0, got {self.probe_failures_per_minute}")


@dataclass
class RevisionTotals:
    """What the simulator has written for one revision so far (for tests and the demo)."""

    requests: int = 0
    errors: int = 0
    probe_failures: int = 0
    minutes_serving: int = 0


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def split_requests(total: int, percents: dict[str, int]) -> dict[str, int]:
    """Share ``total`` requests by percent with largest-remainder rounding (the shares sum to ``total``).

    Ties in the remainder go to the revision that sorts first by name, so the split is deterministic.
    """
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    weight = sum(percents.values())
    if weight <= 0:
        return {}
    exact = {name: total * pct / weight for name, pct in percents.items() if pct > 0}
    shares = {name: math.floor(x) for name, x in exact.items()}
    left = total - sum(shares.values())
    for name in sorted(exact, key=lambda n: (-(exact[n] - shares[n]), n))[:left]:
        shares[name] += 1
    return shares


def scale_counts(counts: list[int], total: int) -> list[int]:
    """Scale bucket counts so they sum to ``total``, keeping proportions (largest remainder)."""
    have = sum(counts)
    if have == total:
        return list(counts)
    if have <= 0:
        raise ValueError("cannot scale an empty histogram to a non-zero total")
    exact = [c * total / have for c in counts]
    out = [math.floor(x) for x in exact]
    left = total - sum(out)
    for i in sorted(range(len(counts)), key=lambda j: (-(exact[j] - out[j]), j))[:left]:
        out[i] += 1
    return out


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A Binomial(n, p) draw from ``rng``, identical on every Python version.

    (``random.binomialvariate`` exists only from 3.12.) Exact Bernoulli trials for n ≤ 1000;
    above that the normal approximation (with continuity correction, clamped to 0..n) when the
    variance is at least 10, else a Poisson draw for the rarer outcome — the textbook regimes
    in which each approximation is good.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if n <= _EXACT_BINOMIAL_TRIALS:
        return sum(1 for _ in range(n) if rng.random() < p)
    variance = n * p * (1.0 - p)
    if variance >= 10.0:
        draw = math.floor(rng.gauss(n * p, math.sqrt(variance)) + 0.5)
        return min(n, max(0, draw))
    rare = min(p, 1.0 - p)
    k = _poisson(rng, n * rare, limit=n)
    return k if rare == p else n - k


def _poisson(rng: random.Random, lam: float, *, limit: int) -> int:
    """Knuth's multiplication method; only used for small ``lam`` (< ~20), capped at ``limit``."""
    threshold = math.exp(-lam)
    k, product = 0, rng.random()
    while product > threshold and k < limit:
        k += 1
        product *= rng.random()
    return k


def _latency_histogram(rng: random.Random, profile: RevisionProfile, count: int, samples: int) -> Histogram:
    """A distribution of ``count`` latencies from ``samples`` lognormal draws (bucketed as drawn)."""
    options = CLOUD_RUN_LATENCY_BUCKETS
    buckets = [0] * num_buckets(options)
    mu = math.log(profile.latency_ms)
    total = 0.0
    total_sq = 0.0
    for _ in range(samples):
        v = rng.lognormvariate(mu, profile.latency_sigma)
        buckets[bucket_index(options, v)] += 1
        total += v
        total_sq += v * v
    mean = total / samples
    ssd_samples = max(0.0, total_sq - samples * mean * mean)
    return Histogram(
        options=options,
        counts=tuple(scale_counts(buckets, count)),
        mean=mean,
        sum_of_squared_deviation=ssd_samples * count / samples,
    )


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


@dataclass
class _Minute:
    """What one revision served in one simulated minute."""

    requests: int
    errors: int


class TrafficSimulator:
    """Writes one minute of Cloud Run metrics at a time for one emulated service (see the module docstring).

    Attributes: ``profiles`` (by revision name; others behave like ``default_profile``), ``now``
    (the simulated clock: the end of the last simulated minute, initially ``start``) and
    ``totals`` (running totals per revision of everything written).
    """

    def __init__(
        self,
        run: CloudRunEmulator,
        monitoring: MonitoringEmulator,
        *,
        project: str,
        region: str,
        service: str,
        requests_per_minute: int = 2000,
        seed: int = 0,
        start: datetime,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError(f"start must be timezone-aware, got {start!r}")
        if requests_per_minute < 0:
            raise ValueError(f"requests_per_minute must be >= 0, got {requests_per_minute}")
        self.run = run
        self.monitoring = monitoring
        self.project = project
        self.region = region
        self.service = service
        self.start = start
        self.requests_per_minute = requests_per_minute
        self.seed = seed
        self.profiles: dict[str, RevisionProfile] = {}
        self.default_profile = RevisionProfile()
        self.totals: dict[str, RevisionTotals] = {}
        self.now = start
        self._rng = random.Random(seed)  # noqa: S311 -- a reproducible simulation, not cryptography

    def set_profile(self, revision: str, profile: RevisionProfile) -> None:
        self.profiles[revision] = profile

    def profile(self, revision: str) -> RevisionProfile:
        return self.profiles.get(revision, self.default_profile)

    def split(self) -> dict[str, int]:
        """The percent of traffic each revision receives right now (LATEST resolved; 0 % omitted)."""
        svc = self.run.service(self.project, self.region, self.service)
        latest = str(svc.get("latestReadyRevision", "")).rsplit("/", 1)[-1]
        shares: dict[str, int] = {}
        for target in svc.get("trafficStatuses") or svc.get("traffic") or []:
            percent = int(target.get("percent", 0))
            is_latest = str(target.get("type", "")).endswith("LATEST") or not target.get("revision")
            name = latest if is_latest else str(target["revision"])
            if name and percent > 0:
                shares[name] = shares.get(name, 0) + percent
        return shares

    def advance(self, minutes: int = 1) -> None:
        """Simulate ``minutes`` whole minutes from :attr:`now`, reading the split afresh each minute."""
        if not 0 <= minutes <= MAX_MINUTES:
            raise ValueError(f"minutes must be within 0..{MAX_MINUTES}, got {minutes}")
        for _ in range(minutes):
            self._simulate_minute()

    def run_until(self, when: datetime) -> None:
        """Advance by whole minutes while the next minute ends at or before ``when``."""
        if when.tzinfo is None:
            raise ValueError(f"when must be timezone-aware, got {when!r}")
        if when <= self.now:
            return
        self.advance((when - self.now) // _MINUTE)

    # -- one minute ---------------------------------------------------------------------------

    def _resource(self, revision: str) -> dict[str, str]:
        return {
            "project_id": self.project,
            "service_name": self.service,
            "revision_name": revision,
            "location": self.region,
            "configuration_name": self.service,
        }

    def _simulate_minute(self) -> None:
        start, end = self.now, self.now + _MINUTE
        shares = split_requests(self.requests_per_minute, self.split())
        for revision in sorted(shares):
            profile = self.profile(revision)
            served = self._write_requests(revision, profile, shares[revision], start, end)
            failures = self._write_probes(revision, profile, start, end)
            totals = self.totals.setdefault(revision, RevisionTotals())
            totals.requests += served.requests
            totals.errors += served.errors
            totals.probe_failures += failures
            totals.minutes_serving += 1
        self.now = end

    def _write_requests(
        self, revision: str, profile: RevisionProfile, requests: int, start: datetime, end: datetime
    ) -> _Minute:
        errors = binomial(self._rng, requests, profile.error_rate)
        by_class = {"2xx": requests - errors, "5xx": errors}
        samples = min(requests, MAX_LATENCY_SAMPLES)
        resource = self._resource(revision)
        for cls, code in _CLASSES:
            count = by_class[cls]
            if count <= 0:
                continue
            labels = {"response_code": code, "response_code_class": cls}
            self.monitoring.write_point(REQUEST_COUNT, labels, "cloud_run_revision", resource, start, end, count)
            # The sample budget is shared by the classes in proportion, at least one draw each.
            drawn = min(count, max(1, round(samples * count / requests)))
            hist = _latency_histogram(self._rng, profile, count, drawn)
            self.monitoring.write_point(REQUEST_LATENCIES, labels, "cloud_run_revision", resource, start, end, hist)
        return _Minute(requests=requests, errors=errors)

    def _write_probes(self, revision: str, profile: RevisionProfile, start: datetime, end: datetime) -> int:
        failures = profile.probe_failures_per_minute
        resource = self._resource(revision)
        healthy = max(0, _PROBES_PER_MINUTE - failures)
        for is_healthy, count in ((True, healthy), (False, failures)):
            if count <= 0:
                continue
            labels = {"probe_type": "LIVENESS", "is_healthy": is_healthy, "container_name": "app"}
            self.monitoring.write_point(PROBE_ATTEMPTS, labels, "cloud_run_revision", resource, start, end, count)
        return failures


def simulate_bad_release(run_emu: Any, monitoring_emu: Any, minutes: int = 10) -> None:
    """The demo's story: ten minutes of traffic on the sample service up to now.

    The newest revision serves 18% 5xx at ~450 ms, the others are fine."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    simulator = TrafficSimulator(
        run_emu,
        monitoring_emu,
        project=SAMPLE_PROJECT,
        region=SAMPLE_REGION,
        service=SAMPLE_SERVICE,
        seed=7,
        start=now - timedelta(minutes=minutes),
    )
    simulator.set_profile("checkout-00042-xyz", RevisionProfile(error_rate=0.18, latency_ms=450.0))
    for good in ("checkout-00040-aaa", "checkout-00041-abc"):
        simulator.set_profile(good, RevisionProfile(error_rate=0.004, latency_ms=120.0))
    simulator.run_until(now)
