"""Builders and in-memory fakes shared by the tests (behind the same interfaces as the real adapters)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from controller.adapters.cloudrun import Applied
from controller.core.alert import Alert, TriggerKind
from controller.core.errors import ConflictError, ServiceNotFound
from controller.core.messages import SlackMessage
from controller.core.state import Revision, ServiceRef, ServiceState, TrafficTarget

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
REF = ServiceRef(project="demo-proj", region="us-central1", service="checkout")


def rev(name: str, minutes: int, *, ready: bool = True) -> Revision:
    """A revision created ``minutes`` after T0 - 1 day (so larger = newer)."""
    return Revision(name=name, create_time=T0 - timedelta(days=1) + timedelta(minutes=minutes), ready=ready)


def pinned(revision: str, percent: int, tag: str = "") -> TrafficTarget:
    return TrafficTarget(kind="revision", revision=revision, percent=percent, tag=tag)


def latest(percent: int = 100, tag: str = "") -> TrafficTarget:
    return TrafficTarget(kind="latest", percent=percent, tag=tag)


def state(
    revisions: list[Revision],
    traffic: list[TrafficTarget] | None = None,
    *,
    annotations: Mapping[str, str] | None = None,
    etag: str = '"e1"',
) -> ServiceState:
    ready = [r for r in revisions if r.ready]
    newest = max(ready, key=lambda r: r.create_time).name if ready else ""
    return ServiceState(
        ref=REF,
        etag=etag,
        traffic=tuple(traffic if traffic is not None else [latest()]),
        revisions=tuple(revisions),
        annotations=dict(annotations or {}),
        latest_ready_revision=newest,
    )


def alert(
    *,
    revision: str | None = "checkout-00042-xyz",
    state_: str = "open",
    trigger: TriggerKind | None = "error_rate",
    incident_id: str = "0.inc1",
    is_test: bool = False,
) -> Alert:
    return Alert(
        incident_id=incident_id,
        state=state_,  # type: ignore[arg-type]
        is_test=is_test,
        project=REF.project,
        region=REF.region,
        service=REF.service,
        revision=revision,
        trigger=trigger,
        metric_type="run.googleapis.com/request_count",
        observed_value=0.183,
        threshold_value=0.05,
        window=timedelta(minutes=5),
        url="https://console.cloud.google.com/monitoring/alerting/incidents/0.inc1",
        started_at=T0,
    )


class InMemoryCloudRun:
    """``CloudRunApi`` over a dict, with the real API's etag semantics (for engine unit tests)."""

    def __init__(self, initial: ServiceState) -> None:
        self._lock = threading.Lock()
        self._state = initial
        self._counter = 1
        self.updates: list[tuple[TrafficTarget, ...]] = []
        self.traffic_changes: list[tuple[TrafficTarget, ...]] = []  # updates that moved traffic
        self.reads = 0
        self.conflicts_to_inject = 0

    @property
    def current(self) -> ServiceState:
        return self._state

    def _bump(self, **changes: object) -> None:
        self._counter += 1
        self._state = self._state.model_copy(update={**changes, "etag": f'"e{self._counter}"'})

    def touch(self) -> None:
        """Someone else changed the service (new etag, same content)."""
        with self._lock:
            self._bump()

    def read(self, ref: ServiceRef) -> ServiceState:
        with self._lock:
            self.reads += 1
            if ref != self._state.ref:
                raise ServiceNotFound(f"{ref} not found")
            return self._state

    def list_services(self, project: str, region: str) -> list[ServiceRef]:
        ref = self._state.ref
        return [ref] if (ref.project, ref.region) == (project, region) else []

    def update(
        self, state: ServiceState, traffic: tuple[TrafficTarget, ...], annotations: Mapping[str, str]
    ) -> Applied:
        with self._lock:
            if self.conflicts_to_inject:
                self.conflicts_to_inject -= 1
                self._bump()
            if state.etag != self._state.etag:
                raise ConflictError(f"etag {state.etag} is stale")
            assert sum(t.percent for t in traffic) == 100
            if traffic != self._state.traffic:
                self.traffic_changes.append(traffic)
            self._bump(traffic=traffic, annotations=dict(annotations))
            self.updates.append(traffic)
            return Applied(state=self._state, confirmed=True)


class RecordingNotifier:
    def __init__(self, *, fail: bool = False) -> None:
        self.messages: list[SlackMessage] = []
        self.fail = fail

        self.updates: list[tuple[str, str, SlackMessage]] = []

    def post(self, message: SlackMessage) -> bool:
        self.messages.append(message)
        return not self.fail

    def update(self, channel: str, ts: str, message: SlackMessage) -> bool:
        self.updates.append((channel, ts, message))
        return not self.fail

    def post_in_thread(self, message: SlackMessage, thread_ts: str | None) -> str | None:
        self.messages.append(message.model_copy(update={"thread_ts": thread_ts}) if thread_ts else message)
        return None if self.fail else f"{len(self.messages)}.000"
