"""The Cloud Run adapter against the emulator modelling Google's behaviour (issue 9 points 2-4, 6, 8;
issue 12 points 2, 5, 13), with the real google-cloud-run client. docs/fidelity.md cites the sources."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from support import REF, T0, RecordingNotifier, alert

from controller.adapters import logs
from controller.adapters.cloudrun import CloudRunClient, OperationFailed
from controller.adapters.cloudrun_errors import translate
from controller.adapters.deadline import Deadline, scope
from controller.adapters.monitoring import MonitoringUnavailable
from controller.adapters.policy_files import load_policies
from controller.app.commit import Change, commit
from controller.app.engine import Controller
from controller.app.settings import Settings
from controller.core.errors import AccessDenied, ConflictError, PermanentError, TemporaryError
from controller.core.evidence import Evidence, Window
from controller.core.ledger import CanaryState, Ledger, read_ledger
from controller.core.state import ServiceRef, ServiceState, TrafficTarget
from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec

ROOT = Path(__file__).resolve().parent.parent.parent
P, R, S = REF.project, REF.region, REF.service
OLDEST, PREVIOUS, SUSPECT = "checkout-00040-aaa", "checkout-00041-abc", "checkout-00042-xyz"
TO_PREVIOUS = (TrafficTarget(kind="revision", revision=PREVIOUS, percent=100),)


def seed(emu: CloudRunEmulator, *, named: bool = False, annotations: dict[str, str] | None = None) -> None:
    emu.add_service(
        P,
        R,
        S,
        revisions=[
            RevisionSpec(OLDEST, T0 - timedelta(days=3)),
            RevisionSpec(PREVIOUS, T0 - timedelta(days=2)),
            RevisionSpec(SUSPECT, T0 - timedelta(minutes=10)),
        ],
        annotations={"team": "payments", "owner": "pay-oncall", **(annotations or {})},
        named_revisions=named,
    )


@pytest.fixture
def emu() -> Iterator[CloudRunEmulator]:
    with CloudRunEmulator(page_size=2) as emulator:
        seed(emulator)
        yield emulator


@pytest.fixture(autouse=True)
def _json_logs() -> None:
    logs.configure()


def client(emu: CloudRunEmulator, **kwargs: float) -> CloudRunClient:
    defaults = {"api_timeout": 2.0, "operation_timeout": 5.0, "poll_interval": 0.05, "poll_timeout": 0.5}
    return CloudRunClient(emu.url, **{**defaults, **kwargs})


def controller(emu: CloudRunEmulator, notes: RecordingNotifier, **settings: float) -> Controller:
    return Controller(
        Settings(**settings),  # type: ignore[arg-type]
        client(emu),
        notes,
        policies=load_policies(ROOT / "policies"),
        clock=lambda: T0 + timedelta(minutes=7),
    )


def log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


# -- point 2: the write touches traffic and annotations only ---------------------------------------


def test_rollback_on_a_named_revision_service_creates_no_revision(emu: CloudRunEmulator) -> None:
    emu.reset()
    seed(emu, named=True)
    before = emu.revision_names(P, R, S)
    outcome = controller(emu, RecordingNotifier()).handle_alert(alert())
    assert outcome.decision is not None and outcome.decision.reason.value == "rolled-back"
    assert emu.revision_names(P, R, S) == before
    assert emu.traffic(P, R, S) == [{"type": "REVISION", "revision": PREVIOUS, "percent": 100, "tag": ""}]
    # The rollback, then the ledger-only write that records Slack was told (controller/core/announce.py).
    assert emu.patches and all(patch.update_mask == ("traffic", "annotations") for patch in emu.patches)
    annotations = emu.service(P, R, S)["annotations"]
    assert annotations["team"] == "payments" and annotations["owner"] == "pay-oncall"  # the whole map went back


def test_canary_step_on_a_named_revision_service_creates_no_revision(emu: CloudRunEmulator) -> None:
    emu.reset()
    seed(emu, named=True)
    before = emu.revision_names(P, R, S)
    step = (
        TrafficTarget(kind="revision", revision=PREVIOUS, percent=90),
        TrafficTarget(kind="revision", revision=SUSPECT, percent=10, tag="canary"),
    )

    canary = CanaryState(candidate=SUSPECT, stable=PREVIOUS, step=1, step_started_at=T0)

    def plan(state: ServiceState, ledger: Ledger) -> tuple[str, Change | None]:
        return "step", Change(step, ledger.model_copy(update={"canary": canary}))

    done = commit(client(emu), REF, plan)
    assert done.applied is not None and done.applied.confirmed
    assert emu.revision_names(P, R, S) == before
    assert read_ledger(emu.service(P, R, S)["annotations"]).canary == canary


def test_emulator_deploys_a_revision_when_the_template_changes(emu: CloudRunEmulator) -> None:
    """The trap the adapter avoids: a full update that clears template.revision clones a revision."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import run_v2

    emu.reset()
    seed(emu, named=True)
    services = run_v2.ServicesClient(
        transport="rest",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": emu.url},
    )
    svc = services.get_service(name=REF.resource_name)
    assert svc.template.revision == SUSPECT
    svc.template.revision = ""
    services.update_service(service=svc).result(timeout=5)  # type: ignore[no-untyped-call]
    assert len(emu.revision_names(P, R, S)) == 4


# -- point 3: what serves, and a rollout that fails ------------------------------------------------


def test_failed_rollout_is_recorded_retryable_told_and_raised(
    emu: CloudRunEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    emu.fail_to_serve(P, R, S, PREVIOUS)
    notes = RecordingNotifier()
    with pytest.raises(TemporaryError):
        controller(emu, notes).handle_alert(alert())
    served = emu.service(P, R, S)
    assert served["trafficStatuses"] == [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}]
    ledger = read_ledger(served["annotations"])
    assert ledger.handled("0.inc1") is None  # a redelivery tries again
    assert ledger.last_action is None or ledger.last_action.kind != "rollback"
    expected = f"rollback FAILED: Cloud Run accepted the change but could not serve {PREVIOUS}"
    assert any(expected in m.text or expected in str(m.blocks) for m in notes.messages)
    assert any(expected in str(line.get("message")) for line in log_lines(capsys))


def test_read_reports_what_serves_while_a_rollout_failed(emu: CloudRunEmulator) -> None:
    emu.fail_to_serve(P, R, S, PREVIOUS)
    run = client(emu)
    with pytest.raises(OperationFailed, match="cannot serve traffic"):
        run.update(run.read(REF), TO_PREVIOUS, {})
    state = run.read(REF)
    assert state.traffic == (TrafficTarget(kind="latest", percent=100),)  # statuses, not the spec
    assert emu.traffic(P, R, S)[0]["revision"] == PREVIOUS  # the spec kept what was asked


def test_read_reports_what_serves_while_reconciling(emu: CloudRunEmulator) -> None:
    emu.operation_polls = 1000
    run = client(emu, operation_timeout=0.3)
    applied = run.update(run.read(REF), TO_PREVIOUS, {})
    assert not applied.confirmed
    assert run.read(REF).traffic == (TrafficTarget(kind="latest", percent=100),)


# -- point 4: fields newer than the client ---------------------------------------------------------


@pytest.mark.parametrize("polls", [0, 2])
def test_unknown_fields_do_not_break_the_operation_wait(emu: CloudRunEmulator, polls: int) -> None:
    emu.operation_polls = polls
    emu.faults.unknown_fields = True
    run = client(emu)
    applied = run.update(run.read(REF), TO_PREVIOUS, {"team": "payments"})
    assert applied.confirmed
    assert applied.state.traffic == TO_PREVIOUS


# -- point 6 and issue 12 point 5: errors by what retrying can fix ---------------------------------


def test_missing_permission_is_acknowledged_and_told(emu: CloudRunEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    # (A 401 is refreshed and retried by google-auth first; AnonymousCredentials cannot refresh,
    # so 401 is covered below at the translation level, with both REST and gRPC exception families.)
    emu.faults.error(403, action="update_service")
    notes = RecordingNotifier()
    outcome = controller(emu, notes).handle_alert(alert())  # returns: acknowledged
    assert "run.services.update" in outcome.error
    assert any(
        "cannot act on checkout: the controller's service account lacks run.services.update" in m.text
        for m in notes.messages
    )
    [line] = [x for x in log_lines(capsys) if x.get("severity") == "ERROR"]
    assert "UpdateService" in str(line["message"]) and "run.services.update" in str(line["message"])


def test_412_and_etag_failed_precondition_are_conflicts(emu: CloudRunEmulator) -> None:
    run = client(emu)
    emu.faults.error(412, action="update_service")
    with pytest.raises(ConflictError):
        run.update(run.read(REF), TO_PREVIOUS, {})
    emu.faults.error(400, action="update_service", message="Precondition check failed: etag mismatch.")
    with pytest.raises(ConflictError):
        run.update(run.read(REF), TO_PREVIOUS, {})
    emu.faults.error(400, action="update_service", message="Precondition check failed: quota project.")
    with pytest.raises(PermanentError):
        run.update(run.read(REF), TO_PREVIOUS, {})


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_statuses_are_temporary(emu: CloudRunEmulator, status: int) -> None:
    emu.faults.error(status, action="get_service", times=50)
    with pytest.raises(TemporaryError):
        client(emu, api_timeout=0.5).read(REF)


def test_only_known_transient_conditions_are_temporary() -> None:
    from google.api_core import exceptions as gexc

    def kind(exc: Exception, what: str = "get_service") -> type[Exception]:
        return type(translate(exc, what, REF))

    untyped: Any = gexc  # api-core's exception constructors are untyped
    for denied in (untyped.Unauthorized, untyped.Forbidden, untyped.Unauthenticated, untyped.PermissionDenied):
        assert kind(denied("no"), "list_revisions") is AccessDenied  # REST and gRPC families
    assert kind(untyped.MethodNotImplemented("no")) is PermanentError
    assert kind(ValueError("bad name")) is PermanentError
    for transient in (untyped.DeadlineExceeded("slow"), untyped.TooManyRequests("later"), TimeoutError("slow")):
        assert issubclass(kind(transient), TemporaryError)
    assert issubclass(kind(untyped.RetryError("gave up", None)), TemporaryError)
    from google.auth import exceptions as auth_exc

    refresh: Any = auth_exc.RefreshError
    assert issubclass(kind(refresh("metadata server busy", retryable=True)), TemporaryError)
    assert kind(refresh("invalid_grant")) is PermanentError


# -- point 8 and issue 12 point 2: one deadline, and a timeout on every call -----------------------


def test_a_hung_poll_does_not_block(emu: CloudRunEmulator) -> None:
    emu.operation_polls = 3
    emu.faults.hang(action="get_operation", times=20, seconds=6)
    run = client(emu, operation_timeout=1.0, poll_timeout=0.3)
    started = time.monotonic()
    applied = run.update(run.read(REF), TO_PREVIOUS, {})
    assert time.monotonic() - started < 3
    assert not applied.confirmed  # committed, completion unconfirmed


def test_the_delivery_deadline_bounds_every_read(emu: CloudRunEmulator) -> None:
    emu.faults.delay(6, action="get_service")
    started = time.monotonic()
    with scope(Deadline(1.0)), pytest.raises(TemporaryError, match="deadline"):
        client(emu, api_timeout=10).read(REF)
    assert time.monotonic() - started < 3


def test_the_operation_wait_stops_at_the_delivery_deadline(emu: CloudRunEmulator) -> None:
    emu.operation_polls = 1000
    run = client(emu, operation_timeout=60)
    started = time.monotonic()
    with scope(Deadline(1.5)):
        applied = run.update(run.read(REF), TO_PREVIOUS, {})
    assert time.monotonic() - started < 3
    assert not applied.confirmed


def test_delivery_deadline_setting(emu: CloudRunEmulator) -> None:
    assert Settings.from_env({}).delivery_deadline == 50.0
    assert Settings.from_env({"ROLLBACK_DELIVERY_DEADLINE": "20"}).delivery_deadline == 20.0
    emu.faults.delay(6, action="get_service")
    notes = RecordingNotifier()
    started = time.monotonic()
    slow = controller(emu, notes, delivery_deadline=1.5)
    slow.run = client(emu, api_timeout=10)
    with pytest.raises(TemporaryError):
        slow.handle_alert(alert())
    assert time.monotonic() - started < 3


# -- issue 12 point 13: conflict re-reads back off within the deadline -----------------------------


def test_conflict_rereads_back_off_with_jitter(emu: CloudRunEmulator) -> None:
    emu.faults.conflict_always = True
    sleeps: list[float] = []

    def plan(state: ServiceState, ledger: Ledger) -> tuple[str, Change | None]:
        return "go", Change(TO_PREVIOUS, ledger)

    with pytest.raises(ConflictError, match="gave up after 4"):
        commit(client(emu), REF, plan, retries=4, sleep=sleeps.append, jitter=lambda: 0.5)
    assert len(sleeps) == 3
    assert sleeps == sorted(sleeps) and sleeps[0] > 0
    jittered: list[float] = []
    with pytest.raises(ConflictError):
        commit(client(emu), REF, plan, retries=3, sleep=jittered.append, jitter=lambda: 0.0)
    assert jittered[0] < sleeps[0]


def test_conflict_backoff_never_sleeps_past_the_deadline(emu: CloudRunEmulator) -> None:
    emu.faults.conflict_always = True
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    def plan(state: ServiceState, ledger: Ledger) -> tuple[str, Change | None]:
        return "go", Change(TO_PREVIOUS, ledger)

    with scope(Deadline(0.3, clock=lambda: now[0])), pytest.raises(TemporaryError):
        commit(client(emu), REF, plan, retries=10, sleep=sleep, jitter=lambda: 1.0)
    assert sum(sleeps) <= 0.3


# -- point 9: the health trigger sees only the probes a revision has -------------------------------


class _RecordingMonitoring:
    """A MonitoringApi that is down, and remembers what it was asked."""

    def __init__(self) -> None:
        self.signals: list[frozenset[str]] = []

    def evidence(self, ref: ServiceRef, window: Window, *, signals: frozenset[str]) -> Evidence:
        self.signals.append(signals)
        raise MonitoringUnavailable("down in this test")


@pytest.mark.parametrize("liveness", [0, 10], ids=["default-probes", "liveness-probe"])
def test_health_verification_is_skipped_without_a_liveness_probe(emu: CloudRunEmulator, liveness: int) -> None:
    emu.reset()
    emu.add_service(
        P,
        R,
        S,
        revisions=[
            RevisionSpec(PREVIOUS, T0 - timedelta(days=2), liveness_period=liveness),
            RevisionSpec(SUSPECT, T0 - timedelta(minutes=10), liveness_period=liveness),
        ],
    )
    state = client(emu).read(REF)
    suspect = state.revision(SUSPECT)
    assert suspect is not None and suspect.startup_period == 240 and suspect.liveness_period == liveness
    monitoring = _RecordingMonitoring()
    ctl = controller(emu, RecordingNotifier())
    ctl.monitoring = monitoring
    outcome = ctl.handle_alert(alert(trigger="health"))
    assert outcome.decision is not None and outcome.decision.verification is not None
    note = outcome.decision.verification.note
    if liveness:
        assert "Cloud Monitoring unavailable" in note and frozenset({"health"}) in monitoring.signals
    else:
        assert "has no liveness probe (a startup probe every 240s" in note
        assert "health verification skipped" in note
        assert frozenset({"health"}) not in monitoring.signals


# -- point 9: a read fetches the revisions it needs, not hundreds on every delivery -----------------


def _revision_calls(emu: CloudRunEmulator) -> int:
    return sum(1 for _, path in emu.requests if "/revisions" in path)


def test_reads_do_not_list_hundreds_of_revisions_every_time(emu: CloudRunEmulator) -> None:
    emu.reset()
    emu.page_size = 50
    many = [RevisionSpec(f"checkout-{i:05d}-abc", T0 - timedelta(hours=300 - i)) for i in range(1, 201)]
    emu.add_service(P, R, S, revisions=many)
    run = client(emu)
    assert len(run.read(REF).revisions) == 200
    first = _revision_calls(emu)
    assert first == 4  # four pages of 50
    for _ in range(3):
        assert len(run.read(REF).revisions) == 200
    assert _revision_calls(emu) == first  # nothing changed: the listing is reused
    emu.add_revision(P, R, S, RevisionSpec("checkout-00201-new", T0))  # a deploy
    assert len(run.read(REF).revisions) == 201
    assert _revision_calls(emu) == first + 5


def test_a_stale_listing_is_caught_before_the_write(emu: CloudRunEmulator) -> None:
    run = client(emu)
    run.read(REF)  # lists: PREVIOUS is Ready
    emu.set_revision_ready(P, R, S, PREVIOUS, ready=False)

    def plan(state: ServiceState, ledger: Ledger) -> tuple[str, Change | None]:
        prev = state.revision(PREVIOUS)
        target = PREVIOUS if prev is not None and prev.ready else OLDEST
        return target, Change((TrafficTarget(kind="revision", revision=target, percent=100),), ledger)

    done = commit(run, REF, plan, sleep=lambda _: None)
    assert done.outcome == OLDEST  # re-planned on a fresh listing
    assert emu.traffic(P, R, S)[0]["revision"] == OLDEST


def test_the_monitoring_budget_is_cut_to_what_the_delivery_has_left() -> None:
    """A Monitoring endpoint that accepts connections and never answers costs the delivery's
    remaining time, not the full Monitoring budget."""
    import socket

    from controller.adapters.monitoring import MonitoringClient
    from controller.core.evidence import trailing_window

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monitoring = MonitoringClient(f"127.0.0.1:{silent.getsockname()[1]}", deadline=10.0)
        window = trailing_window(T0, timedelta(minutes=2))
        started = time.monotonic()
        with scope(Deadline(0.8)), pytest.raises(MonitoringUnavailable):
            monitoring.evidence(REF, window, signals=frozenset({"error_rate"}))
        assert time.monotonic() - started < 3


def test_monitoring_permission_denied_names_the_permission(capsys: pytest.CaptureFixture[str]) -> None:
    """A real gRPC server answering PERMISSION_DENIED, as Cloud Monitoring does without the role."""
    from concurrent import futures

    import grpc

    from controller.adapters.monitoring import MonitoringClient
    from controller.core.evidence import trailing_window

    def deny(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "Permission monitoring.timeSeries.list denied")
        raise AssertionError("abort raises")

    class Deny(grpc.GenericRpcHandler):  # type: ignore[misc]
        def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            return grpc.unary_unary_rpc_method_handler(deny)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((Deny(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monitoring = MonitoringClient(f"127.0.0.1:{port}", deadline=5.0)
        window = trailing_window(T0, timedelta(minutes=2))
        with pytest.raises(MonitoringUnavailable, match=r"lacks monitoring\.timeSeries\.list"):
            monitoring.evidence(REF, window, signals=frozenset({"error_rate"}))
    finally:
        server.stop(grace=None)
    [line] = [x for x in log_lines(capsys) if x.get("severity") == "ERROR"]
    assert line["permission"] == "monitoring.timeSeries.list" and line["api_method"] == "ListTimeSeries"


def test_without_operations_get_the_write_is_confirmed_by_reading_the_service(emu: CloudRunEmulator) -> None:
    emu.operation_polls = 2
    emu.faults.error(403, action="get_operation", times=10)
    run = client(emu)
    applied = run.update(run.read(REF), TO_PREVIOUS, {})
    assert applied.confirmed and applied.detail == "confirmed by read"
    assert applied.state.traffic == TO_PREVIOUS


CANARY_POLICY = """
name: canary
match: {services: ["checkout*"]}
triggers:
  error_rate: {above: 0.05, for: 2m, min_requests: 50}
canary: {steps: [10, 50, 100], step_for: 5m, metric_lag: 3m, min_requests: 100}
"""


def test_canary_tick_on_a_named_revision_service_creates_no_revision(emu: CloudRunEmulator, tmp_path: Path) -> None:
    from controller.app.canary_control import CanaryControl
    from controller.core.canary import Step

    emu.reset()
    emu.add_service(
        P,
        R,
        S,
        revisions=[RevisionSpec(PREVIOUS, T0 - timedelta(days=2)), RevisionSpec(SUSPECT, T0 - timedelta(minutes=1))],
        # CI deployed the candidate with --no-traffic --tag candidate (docs/canary.md).
        traffic=[
            {"type": "REVISION", "revision": PREVIOUS, "percent": 100},
            {"type": "REVISION", "revision": SUSPECT, "percent": 0, "tag": "candidate"},
        ],
        named_revisions=True,
    )
    (tmp_path / "canary.yaml").write_text(CANARY_POLICY)
    before = emu.revision_names(P, R, S)
    control = CanaryControl(client(emu), None, RecordingNotifier(), load_policies(tmp_path), Settings(), lambda: T0)
    assert control.tick(REF).step is Step.ADOPT  # the first tick only records stable (a ledger-only write)
    report = control.tick(REF)
    assert report.step is Step.START and report.changed
    assert emu.revision_names(P, R, S) == before
    assert {t["revision"]: t["percent"] for t in emu.traffic(P, R, S)} == {PREVIOUS: 90, SUSPECT: 10}
