"""Application Default Credentials for Cloud Monitoring are resolved once per process (issue 12, point 14).

Without ``ROLLBACK_MONITORING_ENDPOINT`` the adapter looks for credentials with
``google.auth.default()``, which probes the GCE metadata server (about 3 s where there is none).
Done once per delivery, every acting delivery paid that again; now the outcome, found or not, is
kept for the process and logged once saying what was found.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import google.auth
import pytest
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials

from controller.adapters import monitoring
from controller.adapters.monitoring import MonitoringClient, MonitoringUnavailable
from controller.core.evidence import ALL_SIGNALS, trailing_window
from controller.core.state import ServiceRef

REF = ServiceRef(project="demo-proj", region="us-central1", service="checkout")
WINDOW = trailing_window(datetime(2024, 6, 1, 12, 0, tzinfo=UTC), timedelta(minutes=5))


class CountingSearch:
    """Stands in for ``google.auth.default``: a slow search (a metadata probe) that finds nothing."""

    def __init__(self, seconds: float, result: Any = None) -> None:
        self.seconds = seconds
        self.result = result
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.calls += 1
        time.sleep(self.seconds)
        if self.result is None:
            raise auth_exceptions.DefaultCredentialsError("Your default credentials were not found.")  # type: ignore[no-untyped-call]
        return self.result


def test_a_failed_search_is_not_repeated_by_later_deliveries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="controller.monitoring")
    search = CountingSearch(0.3)
    monkeypatch.setattr(google.auth, "default", search)
    elapsed = []
    for _ in range(2):  # the alert path's and the canary's clients: one process, one search
        with MonitoringClient(deadline=2.0) as client:
            for _ in range(3):
                started = time.monotonic()
                with pytest.raises(MonitoringUnavailable, match="no credentials"):
                    client.evidence(REF, WINDOW, signals=ALL_SIGNALS)
                elapsed.append(time.monotonic() - started)
    assert search.calls == 1
    assert all(seconds < 0.1 for seconds in elapsed[1:])  # only the first paid for the search
    # (A search left over from another test may still log its own outcome: count only this one's.)
    found = [r.getMessage() for r in caplog.records if "Your default credentials were not found" in r.getMessage()]
    assert len(found) == 1
    assert "Cloud Monitoring credentials: none found" in found[0] and "DefaultCredentialsError" in found[0]


def test_found_credentials_are_logged_once_with_their_kind(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="controller.monitoring")
    search = CountingSearch(0.0, result=(AnonymousCredentials(), "demo-proj"))  # type: ignore[no-untyped-call]
    monkeypatch.setattr(google.auth, "default", search)
    for _ in range(3):
        assert monitoring._credentials().wait(5)
    assert search.calls == 1
    found = [r.getMessage() for r in caplog.records if "AnonymousCredentials" in r.getMessage()]
    assert len(found) == 1 and "Cloud Monitoring credentials: AnonymousCredentials (project demo-proj)" in found[0]
