"""Cloud Monitoring adapter: per-revision evidence over gRPC, inside a time budget.

Before the controller acts on an alert it checks the alert's claim against Cloud Monitoring's own
per-revision numbers ("evidence before action"). This module fetches those numbers for one service
and one time window with at most one ``ListTimeSeries`` call per signal — never one per revision.
What is asked and how answers become numbers is pure and lives in the core: the windows and the
value objects in :mod:`controller.core.evidence`, the requests (filters, aggregation) and the
readers of the answers in :mod:`controller.core.timeseries`. This module holds the I/O:

* :class:`MonitoringApi`, what the engine needs (the port; test fakes implement it too);
* :class:`MonitoringClient`: it imports ``google.cloud.monitoring_v3`` and ``grpc`` lazily (a Cloud
  Function's cold start is paid by the first alert of an incident), turns each
  :class:`~controller.core.timeseries.Query` into a ``ListTimeSeriesRequest``, and keeps the whole
  :meth:`~MonitoringClient.evidence` call inside a time budget.

Failures of any kind (outage, timeout, no credentials, permission denied, an unusable answer)
become :class:`MonitoringUnavailable`; the engine then applies the policy's fallback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, Self

from controller.core.errors import TemporaryError
from controller.core.evidence import Evidence, Window, build_evidence
from controller.core.state import ServiceRef
from controller.core.timeseries import (
    Query,
    count_by_revision,
    latency_by_revision,
    queries,
    request_counts_by_revision,
)

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "MonitoringApi",
    "MonitoringClient",
    "MonitoringUnavailable",
    "reset_credentials",
]

# The logger keeps its name from before the layer folders: "logger" is a field of every log line.
log = logging.getLogger("controller.monitoring")

# Least privilege: reading time series needs nothing more.
_SCOPES = ("https://www.googleapis.com/auth/monitoring.read",)
# A bound on pages per query, so a misbehaving server cannot keep us looping (the time budget
# bounds it too; this one also holds when pages come back instantly).
_MAX_PAGES = 50


class MonitoringUnavailable(TemporaryError):
    """Monitoring could not answer in time (outage, timeout, no credentials, permission denied…).

    The message says which and why; the engine applies the policy's fallback.
    """


class MonitoringApi(Protocol):
    """What the engine needs from Cloud Monitoring; :class:`MonitoringClient` and test fakes implement it."""

    def evidence(self, ref: ServiceRef, window: Window, *, signals: frozenset[str]) -> Evidence: ...


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
