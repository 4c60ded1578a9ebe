"""Cloud Monitoring adapter: per-revision evidence (requests, 5xx ratio, latency percentiles, probe failures).

Before the controller acts on an alert it checks the alert's claim against Cloud Monitoring's own
per-revision numbers ("evidence before action"). This module fetches those numbers for one service
and one time window with at most one ``ListTimeSeries`` call per signal — never one per revision:

* ``error_rate``: ``run.googleapis.com/request_count``, ALIGN_DELTA + REDUCE_SUM grouped by
  ``resource.label.revision_name`` and ``metric.label.response_code_class`` → requests (every
  class) and errors ("5xx");
* ``latency``: ``run.googleapis.com/request_latencies``, ALIGN_DELTA + REDUCE_SUM grouped by
  revision (the reducer merges distributions) → p50/p95/p99 of the merged histogram;
* ``health``: ``run.googleapis.com/container/completed_probe_attempt_count`` with
  ``metric.label.is_healthy = false``, ALIGN_DELTA + REDUCE_SUM grouped by revision → failed
  probe attempts.

Every filter is scoped to the service (``service_name`` and ``location``); the request's ``name`` is
``projects/<project>``. The alignment period is the window rounded up to whole minutes, so usually
one point per series comes back, but the window may straddle two alignment buckets and every point
returned is summed. Percentiles are read from the *merged* distribution of each revision (all
response classes, all points), never as a percentile of percentiles.

The module has two halves:

* pure helpers (windows, filters, request specs, proto → numbers), importable and testable without
  any Google library installed;
* :class:`MonitoringClient`, the I/O: it imports ``google.cloud.monitoring_v3`` and ``grpc`` lazily
  (a Cloud Function's cold start is paid by the first alert of an incident) and keeps the whole
  :meth:`~MonitoringClient.evidence` call inside a time budget.

Failures of any kind (outage, timeout, no credentials, permission denied, an unusable answer)
become :class:`MonitoringUnavailable`; the engine then applies the policy's fallback.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self

from pydantic import model_validator

from controller.core.errors import TemporaryError
from controller.core.ratios import ratio
from controller.core.state import Frozen, ServiceRef
from controller.core.stats import (
    BucketOptions,
    ExplicitBuckets,
    ExponentialBuckets,
    Histogram,
    LinearBuckets,
)

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "ALL_SIGNALS",
    "Evidence",
    "MonitoringApi",
    "MonitoringClient",
    "MonitoringUnavailable",
    "Query",
    "RevisionNumbers",
    "Signal",
    "Window",
    "alignment_period",
    "build_evidence",
    "count_by_revision",
    "histogram_from_distribution",
    "latency_by_revision",
    "queries",
    "request_counts_by_revision",
    "revision_window_before",
    "service_filter",
    "trailing_window",
]

log = logging.getLogger(__name__)

Signal = Literal["error_rate", "latency", "health"]
ALL_SIGNALS: frozenset[str] = frozenset({"error_rate", "latency", "health"})

REQUEST_COUNT = "run.googleapis.com/request_count"
REQUEST_LATENCIES = "run.googleapis.com/request_latencies"
PROBE_ATTEMPTS = "run.googleapis.com/container/completed_probe_attempt_count"
_RESOURCE_TYPE = "cloud_run_revision"
_REVISION = "resource.label.revision_name"
_CLASS = "metric.label.response_code_class"

# Least privilege: reading time series needs nothing more.
_SCOPES = ("https://www.googleapis.com/auth/monitoring.read",)
# A bound on pages per query, so a misbehaving server cannot keep us looping (the time budget
# bounds it too; this one also holds when pages come back instantly).
_MAX_PAGES = 50


class MonitoringUnavailable(TemporaryError):
    """Monitoring could not answer in time (outage, timeout, no credentials, permission denied…).

    The message says which and why; the engine applies the policy's fallback.
    """


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


class MonitoringApi(Protocol):
    """What the engine needs from Cloud Monitoring; :class:`MonitoringClient` and test fakes implement it."""

    def evidence(self, ref: ServiceRef, window: Window, *, signals: frozenset[str]) -> Evidence: ...


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


# --------------------------------------------------------------------------------------------
# Pure helpers: queries
# --------------------------------------------------------------------------------------------


def _quote(value: str) -> str:
    """A filter string literal (double quotes; backslash and quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def service_filter(metric_type: str, ref: ServiceRef, extra: Iterable[str] = ()) -> str:
    """``metric.type = "…" AND resource.type = "cloud_run_revision" AND <service scope> [AND extra…]``."""
    parts = [
        f"metric.type = {_quote(metric_type)}",
        f"resource.type = {_quote(_RESOURCE_TYPE)}",
        f"resource.label.service_name = {_quote(ref.service)}",
        f"resource.label.location = {_quote(ref.region)}",
        *extra,
    ]
    return " AND ".join(parts)


@dataclass(frozen=True)
class Query:
    """One ListTimeSeries request, in plain values (the I/O layer turns it into the proto)."""

    signal: str
    name: str
    filter: str
    start: datetime
    end: datetime
    alignment_period: timedelta
    aligner: str
    reducer: str
    group_by: tuple[str, ...]


def queries(ref: ServiceRef, window: Window, signals: Iterable[str]) -> list[Query]:
    """The requests for ``signals``, one per signal, in a fixed order (error_rate, latency, health)."""
    wanted = frozenset(signals)
    unknown = wanted - ALL_SIGNALS
    if unknown:
        raise ValueError(f"unknown signals {sorted(unknown)}; known: {sorted(ALL_SIGNALS)}")
    period = alignment_period(window)

    def query(signal: str, metric_type: str, group_by: tuple[str, ...], extra: tuple[str, ...] = ()) -> Query:
        return Query(
            signal=signal,
            name=f"projects/{ref.project}",
            filter=service_filter(metric_type, ref, extra),
            start=window.start,
            end=window.end,
            alignment_period=period,
            aligner="ALIGN_DELTA",
            reducer="REDUCE_SUM",
            group_by=group_by,
        )

    out: list[Query] = []
    if "error_rate" in wanted:
        out.append(query("error_rate", REQUEST_COUNT, (_REVISION, _CLASS)))
    if "latency" in wanted:
        # ALIGN_DELTA keeps distributions and REDUCE_SUM merges them per revision: the exact
        # histogram of every request, from which any percentile can be read client-side.
        out.append(query("latency", REQUEST_LATENCIES, (_REVISION,)))
    if "health" in wanted:
        # is_healthy is a BOOL label: compared unquoted, as Monitoring filters on bools are.
        out.append(query("health", PROBE_ATTEMPTS, (_REVISION,), ("metric.label.is_healthy = false",)))
    return out


# --------------------------------------------------------------------------------------------
# Pure helpers: protos → numbers (duck-typed on the raw protobuf messages; no imports needed)
# --------------------------------------------------------------------------------------------


def histogram_from_distribution(dist: Any) -> Histogram | None:
    """A ``google.api.Distribution`` (raw protobuf) → :class:`~controller.stats.Histogram`.

    Returns None for an empty distribution (count 0), which Monitoring may send without bucket
    options. Raises ValueError for a non-empty one without bucket options (no percentile can be
    read from it). The emulator keeps its own converter: production code does not import it.
    """
    which = dist.bucket_options.WhichOneof("options")
    if which is None:
        if int(dist.count) == 0:
            return None
        raise ValueError(f"a distribution of {dist.count} values has no bucket options")
    options: BucketOptions
    if which == "linear_buckets":
        lb = dist.bucket_options.linear_buckets
        options = LinearBuckets(int(lb.num_finite_buckets), float(lb.width), float(lb.offset))
    elif which == "exponential_buckets":
        eb = dist.bucket_options.exponential_buckets
        options = ExponentialBuckets(int(eb.num_finite_buckets), float(eb.growth_factor), float(eb.scale))
    else:
        options = ExplicitBuckets(tuple(float(b) for b in dist.bucket_options.explicit_buckets.bounds))
    hist = Histogram(
        options=options,
        counts=tuple(int(c) for c in dist.bucket_counts),
        mean=float(dist.mean),
        sum_of_squared_deviation=float(dist.sum_of_squared_deviation),
    )
    return hist if hist.count else None


def _int_value(value: Any) -> int:
    """An INT64 (or, after some reducers, DOUBLE) point value as an int; other kinds are errors."""
    which = value.WhichOneof("value")
    if which == "int64_value":
        return int(value.int64_value)
    if which == "double_value":
        return round(float(value.double_value))
    raise ValueError(f"expected a count, got a {which} value")


def count_by_revision(series: Iterable[Any]) -> dict[str, int]:
    """Sum every point of every series per ``revision_name`` (the window may straddle buckets)."""
    out: dict[str, int] = {}
    for ts in series:
        revision = ts.resource.labels.get("revision_name", "")
        total = sum(_int_value(p.value) for p in ts.points)
        out[revision] = out.get(revision, 0) + total
    return out


def request_counts_by_revision(series: Iterable[Any]) -> dict[str, tuple[int, int]]:
    """``request_count`` series → ``{revision: (requests, errors)}``: all classes, and "5xx"."""
    out: dict[str, tuple[int, int]] = {}
    for ts in series:
        revision = ts.resource.labels.get("revision_name", "")
        total = sum(_int_value(p.value) for p in ts.points)
        is_error = ts.metric.labels.get("response_code_class", "") == "5xx"
        requests, errors = out.get(revision, (0, 0))
        out[revision] = (requests + total, errors + (total if is_error else 0))
    return out


def latency_by_revision(series: Iterable[Any]) -> dict[str, Histogram]:
    """``request_latencies`` series → one merged histogram per revision (every point, every series)."""
    out: dict[str, Histogram] = {}
    for ts in series:
        revision = ts.resource.labels.get("revision_name", "")
        for p in ts.points:
            if p.value.WhichOneof("value") != "distribution_value":
                raise ValueError(f"expected a distribution for {revision}, got {p.value.WhichOneof('value')}")
            hist = histogram_from_distribution(p.value.distribution_value)
            if hist is None:
                continue
            previous = out.get(revision)
            # merge() refuses different layouts rather than re-binning: that would invent where
            # values lay inside a bucket.
            out[revision] = hist if previous is None else previous.merge(hist)
    return out


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


# --------------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------------


class _Budget:
    """An absolute deadline on the monotonic clock, shared by every call of one ``evidence()``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, what: str) -> float:
        left = self.remaining()
        if left <= 0:
            raise MonitoringUnavailable(f"Cloud Monitoring: out of the {self.seconds:g}s budget before {what}")
        return left


class _BudgetTimeout:
    """api_core ``timeout=`` object: every attempt gets exactly what is left of the budget.

    A plain float becomes api_core's ``TimeToDeadlineTimeout``, which hands an attempt the *whole*
    timeout again once less than a second remains — a retry late in the budget could then run a
    full extra deadline. This gives each attempt ``max(remaining, 1 ms)``, never more. api_core
    applies it inside the retry, so it also counts attempts (retries included) in ``calls``.
    """

    def __init__(self, budget: _Budget, calls: list[int]) -> None:
        self._budget = budget
        self._calls = calls

    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        def with_timeout(*args: Any, **kwargs: Any) -> Any:
            self._calls[0] += 1
            kwargs["timeout"] = max(0.001, self._budget.remaining())
            return func(*args, **kwargs)

        return with_timeout


class _CredentialSearch:
    """Application Default Credentials, looked up once on a background thread.

    ``google.auth.default()`` may probe the GCE metadata server (3 tries with backoff, about 3 s
    where there is none); running it on a thread lets each caller wait only for what is left of
    its own budget. The outcome, found or not, is logged once and kept: see :func:`_credentials`.
    """

    def __init__(self) -> None:
        self._done = threading.Event()
        self.credentials: Any = None
        self.error: BaseException | None = None
        threading.Thread(target=self._run, name="monitoring-adc", daemon=True).start()

    def _run(self) -> None:
        started = time.monotonic()
        try:
            import google.auth

            self.credentials, project = google.auth.default(scopes=list(_SCOPES))
            log.info(
                "Cloud Monitoring credentials: %s (project %s), found in %.1f s",
                type(self.credentials).__name__,
                project or "unknown",
                time.monotonic() - started,
            )
        except BaseException as exc:  # reported to the waiting caller, never lost on this thread
            self.error = exc
            log.warning(
                "Cloud Monitoring credentials: none found in %.1f s (%s: %s); evidence is unavailable "
                "in this process until it restarts with credentials (or set ROLLBACK_MONITORING_ENDPOINT)",
                time.monotonic() - started,
                type(exc).__name__,
                exc,
            )
        finally:
            self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(max(0.0, timeout))


_search_lock = threading.Lock()
_search: _CredentialSearch | None = None


def _credentials() -> _CredentialSearch:
    """The process's one credentials search (started on first use).

    Resolved once per process, success or failure: without credentials every delivery used to
    spend ~3 s probing the metadata server again. Credentials do not appear in a running Cloud
    Function; locally, fix them and restart.
    """
    global _search
    with _search_lock:
        if _search is None:
            _search = _CredentialSearch()
        return _search


def reset_credentials() -> None:
    """Forget the process's credentials search (tests change the environment between cases)."""
    global _search
    with _search_lock:
        _search = None


def _describe(exc: BaseException) -> str:
    """A one-line reason for an API failure, naming the gRPC status when there is one."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.RetryError):
        cause = exc.cause
        return f"gave up retrying ({exc.message}; last error: {_describe(cause) if cause else 'none'})"
    if isinstance(exc, gexc.GoogleAPICallError):
        status = exc.grpc_status_code.name if exc.grpc_status_code is not None else str(exc.code)
        return f"{status}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


class EvidenceCache:
    """A memo over a ``MonitoringApi`` for one delivery or one tick.

    Each (window, signals) is asked once, even when the caller re-plans after an etag conflict;
    and once Monitoring has failed it is not asked again, so an outage costs one deadline, not one
    per look-up. ``failure`` says why, for logs and Slack.
    """

    def __init__(self, monitoring: MonitoringApi | None, ref: ServiceRef) -> None:
        self._monitoring = monitoring
        self._ref = ref
        self._answers: dict[tuple[datetime, datetime, frozenset[str]], Evidence] = {}
        self.failure = "" if monitoring is not None else "Cloud Monitoring is not configured"

    def get(self, window: Window, signals: frozenset[str]) -> Evidence:
        if self.failure or self._monitoring is None:
            raise MonitoringUnavailable(self.failure)
        key = (window.start, window.end, signals)
        if key not in self._answers:
            try:
                self._answers[key] = self._monitoring.evidence(self._ref, window, signals=signals)
            except MonitoringUnavailable as exc:
                self.failure = str(exc) or type(exc).__name__
                raise
        return self._answers[key]


class MonitoringClient:
    """:class:`MonitoringApi` on google-cloud-monitoring's ``MetricServiceClient`` (gRPC).

    ``endpoint`` (``host:port``) selects a plaintext gRPC endpoint without credentials (the local
    emulator); None means Google's endpoint with Application Default Credentials. ``deadline``
    bounds each :meth:`evidence` call as a whole, retries and paging included. ``page_size`` (0 =
    the server's default) exists so tests can exercise paging.

    The client library is imported and the client built on first use, under a lock, so importing
    this module costs nothing and concurrent first calls build one client. Call :meth:`close` (or
    use ``with``) to close the gRPC channel.

    Time budget: one monotonic deadline, ``deadline`` seconds after :meth:`evidence` starts, covers
    finding credentials, building the client and every page of every query. Each RPC gets an
    explicit ``timeout`` equal to what is left, and a ``retry`` (UNAVAILABLE and DEADLINE_EXCEEDED
    only; 50 ms backoff doubling to 500 ms, jittered) whose total timeout is what is left; a page
    is not started once the budget is spent. Whatever fails — the budget, an API error (retried
    out or not retryable: PERMISSION_DENIED, UNAUTHENTICATED, INVALID_ARGUMENT…), a gRPC or
    google.auth error, missing credentials, a malformed answer — raises
    :class:`MonitoringUnavailable`, never later than about ``deadline`` seconds after the call.
    """

    def __init__(self, endpoint: str | None = None, *, deadline: float = 5.0, page_size: int = 0) -> None:
        if not deadline > 0:
            raise ValueError(f"deadline must be positive, got {deadline}")
        if page_size < 0:
            raise ValueError(f"page_size must not be negative, got {page_size}")
        self._endpoint = endpoint
        self._deadline = deadline
        self._page_size = page_size
        self._lock = threading.Lock()
        self._client: Any = None

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the gRPC channel (a later call builds a new client)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _get_client(self, budget: _Budget) -> Any:
        with self._lock:
            if self._client is not None:
                return self._client
            if self._endpoint:
                import grpc
                from google.cloud import monitoring_v3
                from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

                # Plaintext: an api_endpoint with anonymous credentials would build a TLS channel
                # and fail the handshake (wire/03b).
                channel = grpc.insecure_channel(self._endpoint)
                transport = MetricServiceGrpcTransport(channel=channel)
                self._client = monitoring_v3.MetricServiceClient(transport=transport)
                return self._client
        search = _credentials()
        # Wait outside the lock, so one slow search does not hold up close() or other callers
        # beyond their own budgets.
        if not search.wait(budget.remaining()):
            raise MonitoringUnavailable(
                f"Cloud Monitoring: no Application Default Credentials found within the {budget.seconds:g}s budget"
            )
        with self._lock:
            if self._client is not None:
                return self._client
            if search.error is not None:
                raise MonitoringUnavailable(f"Cloud Monitoring: no credentials: {search.error}") from search.error
            from google.cloud import monitoring_v3

            self._client = monitoring_v3.MetricServiceClient(credentials=search.credentials)
            return self._client

    # -- the query ------------------------------------------------------------------------

    def evidence(self, ref: ServiceRef, window: Window, *, signals: frozenset[str]) -> Evidence:
        """Per-revision numbers for ``ref`` over ``window``: one ListTimeSeries call per signal (+ pages)."""
        wanted = frozenset(signals)
        plan = queries(ref, window, wanted)  # ValueError for unknown signals: a programming error
        # Never more than what remains of the delivery's deadline (controller/adapters/deadline.py).
        from controller.adapters.deadline import current

        budget = _Budget(min(self._deadline, current().remaining()))
        started = time.monotonic()
        calls = [0]
        results: dict[str, list[Any]] = {}
        try:
            client = self._get_client(budget)
            for q in plan:
                results[q.signal] = self._fetch(client, q, budget, calls)
            evidence = build_evidence(
                window,
                wanted,
                calls[0],
                counts=request_counts_by_revision(results["error_rate"]) if "error_rate" in results else None,
                latencies=latency_by_revision(results["latency"]) if "latency" in results else None,
                health=count_by_revision(results["health"]) if "health" in results else None,
            )
        except MonitoringUnavailable:
            raise
        except ValueError as exc:
            raise MonitoringUnavailable(f"Cloud Monitoring: unusable answer for {ref}: {exc}") from exc
        except Exception as exc:
            if not _is_client_error(exc):
                raise
            elapsed = time.monotonic() - started
            denied = _denied(exc)
            if denied:
                # Redelivery cannot grant a permission: say which one (the policy's fallback decides).
                log.error(denied, extra={"fields": {"api_method": "ListTimeSeries", "permission": _PERMISSION}})
                raise MonitoringUnavailable(f"Cloud Monitoring: {denied} ({_describe(exc)})") from exc
            raise MonitoringUnavailable(
                f"Cloud Monitoring: {ref} after {elapsed:.2f}s ({calls[0]} calls): {_describe(exc)}"
            ) from exc
        log.debug(
            "monitoring evidence for %s: %d revisions, %d calls, %.0f ms",
            ref,
            len(evidence.revisions),
            evidence.calls,
            (time.monotonic() - started) * 1000,
        )
        return evidence

    def _fetch(self, client: Any, q: Query, budget: _Budget, calls: list[int]) -> list[Any]:
        """All series of one query, following pages, as raw protobuf ``TimeSeries``."""
        from google.api_core import exceptions as gexc
        from google.api_core.retry import Retry, if_exception_type
        from google.cloud import monitoring_v3

        request = monitoring_v3.ListTimeSeriesRequest(
            name=q.name,
            filter=q.filter,
            interval=monitoring_v3.TimeInterval(start_time=q.start, end_time=q.end),
            aggregation=monitoring_v3.Aggregation(
                alignment_period=q.alignment_period,
                per_series_aligner=getattr(monitoring_v3.Aggregation.Aligner, q.aligner),
                cross_series_reducer=getattr(monitoring_v3.Aggregation.Reducer, q.reducer),
                group_by_fields=list(q.group_by),
            ),
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
            page_size=self._page_size,
        )

        series: list[Any] = []
        for _page in range(_MAX_PAGES):
            left = budget.check(f"the {q.signal} query")
            # Retry only what a retry can fix, and never past the budget (api_core checks the
            # retry timeout before each backoff sleep).
            retry = Retry(
                predicate=if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded),
                initial=0.05,
                maximum=0.5,
                multiplier=2.0,
                timeout=left,
            )
            pager = client.list_time_series(request=request, retry=retry, timeout=_BudgetTimeout(budget, calls))
            # The pager proxies the first response's fields; paging by hand (rather than
            # iterating the pager) lets every page get a retry bound to what is left.
            series.extend(monitoring_v3.TimeSeries.pb(ts) for ts in pager.time_series)
            token = pager.next_page_token
            if not token:
                return series
            request.page_token = token
        raise MonitoringUnavailable(f"Cloud Monitoring: the {q.signal} query did not finish within {_MAX_PAGES} pages")


_PERMISSION = "monitoring.timeSeries.list"


def _denied(exc: BaseException) -> str:
    """For a 401/403 (REST ``Unauthorized``/``Forbidden``, gRPC ``Unauthenticated``/``PermissionDenied``):
    what is missing; else ""."""
    import grpc
    from google.api_core import exceptions as gexc

    code = exc.code() if isinstance(exc, grpc.RpcError) and hasattr(exc, "code") else None
    if isinstance(exc, gexc.Unauthorized | gexc.Forbidden) or code in (
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    ):
        return f"ListTimeSeries refused: the controller's service account lacks {_PERMISSION}"
    return ""


def _is_client_error(exc: BaseException) -> bool:
    """Errors from the client stack (api_core, grpc, google.auth) that mean "Monitoring unavailable"."""
    import grpc
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    return isinstance(exc, gexc.GoogleAPIError | grpc.RpcError | auth_exc.GoogleAuthError)
