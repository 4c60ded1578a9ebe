"""Log lines are always written and always bounded (issue 12 points 8 and 12)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from support import T0, InMemoryCloudRun, RecordingNotifier, alert, rev, state

from controller.adapters import logs
from controller.adapters.policy_files import load_policies
from controller.app.engine import Controller
from controller.app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent.parent
REVS = [rev("checkout-00040-aaa", 1), rev("checkout-00041-abc", 2), rev("checkout-00042-xyz", 3)]
LONE = "\ud800"


@pytest.fixture(autouse=True)
def _json_logs() -> None:
    logs.configure()


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    out = capsys.readouterr().out.splitlines()
    return [json.loads(line) for line in out if line.startswith("{")]


def controller() -> tuple[Controller, InMemoryCloudRun]:
    run = InMemoryCloudRun(state(REVS))
    settings = Settings(slack_bot_token=None)
    # A fresh delivery (the alert opened 7 minutes ago): an old one would need fresh confirmation.
    clock = lambda: T0 + timedelta(minutes=7)  # noqa: E731
    return Controller(settings, run, RecordingNotifier(), policies=load_policies(ROOT / "policies"), clock=clock), run


def test_lone_surrogate_in_fields_still_writes_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("controller.test").warning(
        f"odd {LONE} text", extra={"fields": {"label": f"a{LONE}b", "nested": {"k": [LONE]}}, "labels": {"x": LONE}}
    )
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    (line,) = [json.loads(x) for x in captured.out.splitlines()]
    assert line["label"] == f"a{LONE}b"  # escaped as \ud800 in the JSON text, read back as written
    assert line["severity"] == "WARNING"


def test_rollback_with_a_lone_surrogate_in_free_text_has_its_decision_line(capsys: pytest.CaptureFixture[str]) -> None:
    ctl, _run = controller()
    hostile = alert().model_copy(update={"url": f"https://example.com/{LONE}", "alert_policy": f"p{LONE}"})
    outcome = ctl.handle_alert(hostile)
    assert outcome.decision is not None and outcome.decision.changes_traffic
    decisions = [x for x in lines(capsys) if isinstance(x.get("decision"), dict)]
    assert len(decisions) == 1
    assert decisions[0]["decision"]["reason"] == "rolled-back"  # type: ignore[index]


def test_huge_values_are_bounded_per_field_and_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    big = "x" * (256 * 1024)
    ctl, _ = controller()
    hostile = alert().model_copy(
        update={"url": big, "alert_policy": big, "summary": big, "condition_name": big, "user_labels": {"k": big}}
    )
    ctl.handle_alert(hostile)
    raw = capsys.readouterr().out.splitlines()
    assert raw
    for text in raw:
        assert len(text) <= logs.MAX_LINE_CHARS
    line = json.loads(raw[-1])
    assert isinstance(line["incident"], dict)
    url = line["incident"]["url"]
    assert url.startswith("xxx") and url.endswith(f"(+{256 * 1024 - logs.MAX_FIELD_CHARS} chars)")


def test_a_line_over_the_limit_after_bounding_still_says_what_happened(capsys: pytest.CaptureFixture[str]) -> None:
    many = {f"k{i}": "y" * logs.MAX_FIELD_CHARS for i in range(logs.MAX_ITEMS)}
    logging.getLogger("controller.test").info("many fields", extra={"fields": many})
    (text,) = capsys.readouterr().out.splitlines()
    assert len(text) <= logs.MAX_LINE_CHARS
    assert json.loads(text)["message"] == "many fields"


def test_unserialisable_fields_do_not_drop_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    loop: dict[str, object] = {}
    loop["self"] = loop
    logging.getLogger("controller.test").error("loop", extra={"fields": {"loop": loop}})
    (text,) = capsys.readouterr().out.splitlines()
    assert json.loads(text)["message"] == "loop"
