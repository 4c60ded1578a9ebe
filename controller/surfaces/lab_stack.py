"""The lab's stack: Cloud Run and Monitoring emulators, clients and the controller on a virtual clock.

``LabStack`` starts the emulators once and hands out the real ``Controller`` wired to them;
``Ingestion`` stands between the traffic simulator and the Monitoring emulator, holding each
minute's points back for the scenario's ingestion lag (see ``controller.surfaces.lab``).
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from controller.core.lab_scenario import DEPLOY_AT, MinuteStat
from controller.core.policy_matching import PolicySet
from controller.core.stats import Histogram, merge_all

if TYPE_CHECKING:
    from controller.app.engine import Controller
    from controller.emulator.monitoring import MonitoringEmulator

__all__ = ["Ingestion", "LabStack", "VirtualClock"]

REQUEST_COUNT = "run.googleapis.com/request_count"
REQUEST_LATENCIES = "run.googleapis.com/request_latencies"


class Ingestion:
    """Stands in for the Monitoring emulator's ``write_point`` for the traffic simulator: keeps each
    point until ``lag`` after its interval ends, then writes it; records per-minute stats."""

    def __init__(self, target: MonitoringEmulator, lag: timedelta) -> None:
        self.target = target
        self.lag = lag
        self.pending: list[tuple[datetime, tuple[Any, ...], dict[str, Any]]] = []
        self.stats: dict[tuple[datetime, str], MinuteStat] = {}

    def write_point(self, *args: Any, **kwargs: Any) -> None:
        metric_type, metric_labels, _rtype, resource, _start, end, value = args[:7]
        self.pending.append((end, args, kwargs))
        revision = str(resource["revision_name"])
        stat = self.stats.setdefault((end, revision), MinuteStat(end, revision))
        if metric_type == REQUEST_COUNT:
            stat.requests += int(value)
            if metric_labels.get("response_code_class") == "5xx":
                stat.errors += int(value)
        elif metric_type == REQUEST_LATENCIES and isinstance(value, Histogram):
            stat.latency = value if stat.latency is None else merge_all([stat.latency, value])

    def flush(self, now: datetime) -> None:
        """Make visible everything whose minute ended at least ``lag`` before ``now``."""
        keep = []
        for end, args, kwargs in self.pending:
            if end + self.lag <= now:
                self.target.write_point(*args, **kwargs)
            else:
                keep.append((end, args, kwargs))
        self.pending = keep


# --------------------------------------------------------------------------------------------
# The stack: emulators, clients, controller
# --------------------------------------------------------------------------------------------


class VirtualClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class LabStack:
    """Cloud Run and Monitoring emulators with clients, reused across runs (``reset`` between)."""

    def __init__(self, policies: PolicySet | None = None) -> None:
        self.clock = VirtualClock(DEPLOY_AT)
        self.policies = policies
        self._exit = contextlib.ExitStack()

    def __enter__(self) -> LabStack:
        from controller.adapters.monitoring import MonitoringClient
        from controller.adapters.policy_files import DEFAULT_POLICY_PATH, load_policies
        from controller.emulator.cloudrun import CloudRunEmulator
        from controller.emulator.monitoring import MonitoringEmulator, insecure_client

        if self.policies is None:
            self.policies = load_policies(DEFAULT_POLICY_PATH)
        self.run = self._exit.enter_context(CloudRunEmulator(clock=self.clock))
        self.monitoring = self._exit.enter_context(MonitoringEmulator())
        self.reader = insecure_client(self.monitoring.target)
        self._exit.callback(self.reader.transport.close)
        self.evidence = self._exit.enter_context(MonitoringClient(self.monitoring.target, deadline=10.0))
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def controller(self) -> Controller:
        from controller.adapters.cloudrun import CloudRunClient
        from controller.adapters.slack import LogOnlyNotifier
        from controller.app.engine import Controller
        from controller.app.settings import Settings

        assert self.policies is not None
        return Controller(
            Settings(),
            CloudRunClient(self.run.url),
            LogOnlyNotifier(),
            policies=self.policies,
            clock=self.clock,
            monitoring=self.evidence,
        )
