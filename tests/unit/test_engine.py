"""The engine's orchestration and failure rules, on in-memory fakes behind the real interfaces."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import pytest
from cloudevents.http import CloudEvent
from support import REF, T0, InMemoryCloudRun, RecordingNotifier, alert, rev, state

from controller.adapters import logs
from controller.adapters.cloudrun import Applied, OperationFailed
from controller.adapters.policy_files import load_policies
from controller.app.engine import Controller
from controller.app.settings import Settings
from controller.core.decide import Reason
from controller.core.errors import ConflictError, TemporaryError
from controller.core.state import ServiceState, TrafficTarget

ROOT = Path(__file__).resolve().parent.parent.parent
DATA = ROOT / "tests" / "data"
REVS = [rev("checkout-00040-aaa", 1), rev("checkout-00041-abc", 2), rev("checkout-00042-xyz", 3)]


def make(
    *, dry_run: bool = False, notifier: RecordingNotifier | None = None, retries: int = 4
) -> tuple[Controller, InMemoryCloudRun, RecordingNotifier]:
    run = InMemoryCloudRun(state(REVS))
    notes = notifier or RecordingNotifier()
    settings = Settings(dry_run=dry_run, conflict_retries=retries, slack_bot_token=None)
    ctl = Controller(
        settings, run, notes, policies=load_policies(ROOT / "policies"), clock=lambda: T0 + timedelta(minutes=7)
    )
    return ctl, run, notes


def log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


@pytest.fixture(autouse=True)
def _json_logs() -> None:
    logs.configure()


def test_rollback_writes_traffic_and_ledger_once_and_logs_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    ctl, run, notes = make()
    outcome = ctl.handle_alert(alert())
    assert outcome.decision is not None
    assert outcome.decision.reason is Reason.ROLLED_BACK
    # The rollback, then (traffic unchanged) the ledger noting that Slack was told (controller/core/announce.py).
    assert len(run.traffic_changes) == 1 and len(run.updates) == 2
    assert run.current.percent_by_revision() == {"checkout-00041-abc": 100}
    assert "rollback-controller/incidents" in run.current.annotations
    assert "rollback-controller/unannounced" not in run.current.annotations
    assert len(notes.messages) == 1
    lines = log_lines(capsys)
    assert len(lines) == 1
    line = lines[0]
    assert line["severity"] == "INFO"
    decision = line["decision"]
    assert isinstance(decision, dict)
    assert decision["reason"] == "rolled-back"
    assert decision["target"] == "checkout-00041-abc"
    assert line["logging.googleapis.com/labels"] == {
        "incident_id": "0.inc1",
        "reason": "rolled-back",
        "service": str(REF),
    }


def test_conflict_rereads_and_retries() -> None:
    ctl, run, _ = make()
    run.conflicts_to_inject = 2
    outcome = ctl.handle_alert(alert())
    assert outcome.attempts == 3
    assert len(run.traffic_changes) == 1


def test_persistent_conflict_is_raised_for_redelivery(capsys: pytest.CaptureFixture[str]) -> None:
    ctl, run, notes = make(retries=3)
    run.conflicts_to_inject = 10
    with pytest.raises(ConflictError, match="gave up after 3 attempts"):
        ctl.handle_alert(alert())
    assert run.updates == []
    assert notes.messages == []
    assert log_lines(capsys)[-1]["severity"] == "WARNING"


def test_redelivery_after_success_reads_but_never_writes() -> None:
    ctl, run, notes = make()
    ctl.handle_alert(alert())
    outcome = ctl.handle_alert(alert())
    assert outcome.decision is not None
    assert outcome.decision.reason is Reason.ALREADY_HANDLED
    assert len(run.traffic_changes) == 1
    assert len(run.updates) == 2  # the rollback and its "announced" mark; the redelivery wrote nothing
    assert len(notes.messages) == 1


def test_alert_without_service_labels_is_acknowledged(capsys: pytest.CaptureFixture[str]) -> None:
    ctl, run, _ = make()
    outcome = ctl.handle_alert(alert().model_copy(update={"service": None, "region": None}))
    assert "missing region, service" in outcome.error
    assert run.reads == 0
    assert log_lines(capsys)[-1]["severity"] == "ERROR"


def test_unknown_service_is_acknowledged() -> None:
    ctl, run, _ = make()
    outcome = ctl.handle_alert(alert().model_copy(update={"service": "nope"}))
    assert "not found" in outcome.error
    assert run.updates == []


def test_slack_failure_never_blocks_the_rollback() -> None:
    ctl, run, _ = make(notifier=RecordingNotifier(fail=True))
    outcome = ctl.handle_alert(alert())
    assert outcome.notified is False
    assert len(run.updates) == 1


def test_dry_run_notifies_and_never_writes() -> None:
    ctl, run, notes = make(dry_run=True)
    outcome = ctl.handle_alert(alert())
    assert outcome.decision is not None
    assert outcome.decision.reason is Reason.DRY_RUN
    assert run.updates == []
    assert "DRY RUN" in notes.messages[0].text


def test_invalid_policies_are_a_temporary_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\nmode: sometimes\n")
    run = InMemoryCloudRun(state(REVS))
    ctl = Controller(Settings(policies=tmp_path), run, RecordingNotifier())
    with pytest.raises(TemporaryError, match="invalid"):
        ctl.handle_alert(alert())


def test_cloud_event_path_parses_and_acts(capsys: pytest.CaptureFixture[str]) -> None:
    ctl, _run, _ = make()
    body = json.loads((DATA / "cloudevent-binary.json").read_text())
    event = CloudEvent(
        {"type": body["headers"]["ce-type"], "source": body["headers"]["ce-source"], "id": body["headers"]["ce-id"]},
        body["body"],
    )
    outcome = ctl.handle_cloud_event(event)
    assert outcome.decision is not None
    assert outcome.decision.reason is Reason.ROLLED_BACK
    line = log_lines(capsys)[-1]
    delivery = line["delivery"]
    assert isinstance(delivery, dict)
    assert delivery["event_id"] == "11937923011474843"


def test_malformed_cloud_event_is_logged_and_acknowledged(capsys: pytest.CaptureFixture[str]) -> None:
    ctl, run, _ = make()
    event = CloudEvent(
        {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "//x", "id": "42"},
        {"message": {"data": "bm90IGpzb24="}},
    )
    outcome = ctl.handle_cloud_event(event)
    assert outcome.error
    assert run.reads == 0
    line = log_lines(capsys)[-1]
    assert line["severity"] == "ERROR"
    assert "message.data" in str(line["message"])


def test_logs_never_carry_the_slack_token(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-super-secret", "SLACK_CHANNEL": "#c"})
    assert "xoxb-super-secret" not in repr(settings)
    assert "xoxb-super-secret" not in settings.model_dump_json()
    run = InMemoryCloudRun(state(REVS))
    ctl = Controller(settings, run, RecordingNotifier(), policies=load_policies(ROOT / "policies"))
    ctl.handle_alert(alert())
    assert "xoxb-super-secret" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("false", False), ("", False), ("0", False)],
)
def test_dry_run_flag_parsing(raw: str, expected: bool) -> None:
    assert Settings.from_env({"ROLLBACK_DRY_RUN": raw}).dry_run is expected


def test_dry_run_flag_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="ROLLBACK_DRY_RUN"):
        Settings.from_env({"ROLLBACK_DRY_RUN": "maybe"})


class _FailingOperation(InMemoryCloudRun):
    def update(
        self, state: ServiceState, traffic: tuple[TrafficTarget, ...], annotations: Mapping[str, str]
    ) -> Applied:
        raise OperationFailed("update of demo-proj/us-central1/checkout failed: revision not Ready")


def test_failed_operation_is_told_loudly_and_redelivered(capsys: pytest.CaptureFixture[str]) -> None:
    notes = RecordingNotifier()
    ctl = Controller(
        Settings(), _FailingOperation(state(REVS)), notes, policies=load_policies(ROOT / "policies"), clock=lambda: T0
    )
    with pytest.raises(TemporaryError, match="revision not Ready"):  # Pub/Sub redelivers (issue 9 point 3)
        ctl.handle_alert(alert())
    [message] = notes.messages
    assert message.text.startswith(":rotating_light: Rollback of checkout FAILED")
    assert "reason `rollback-failed`" in str(message.blocks)
    assert "rollback FAILED" in str(log_lines(capsys)[-1]["message"])
