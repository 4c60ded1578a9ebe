"""Issue 10 points 1-7 from a shell: the real ``python -m controller`` as subprocesses against the
Cloud Run, Monitoring and Slack emulators, with the shipped default policy (canary 10/25/50/100,
cooldown 15m). Humans and the controller never fight over traffic."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.core.ledger import read_ledger
from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec
from controller.emulator.monitoring import MonitoringEmulator
from controller.emulator.slack import SlackEmulator
from controller.surfaces.demo import PROJECT, function_env

ROOT = Path(__file__).resolve().parents[2]
REGION, SERVICE = "us-central1", "checkout"
NOW = datetime.datetime.now(datetime.UTC)
OLDEST, PREVIOUS, CURRENT, NEXT = "checkout-00040-aaa", "checkout-00041-abc", "checkout-00042-xyz", "checkout-00043-new"
WHERE = [SERVICE, "--region", REGION, "--project", PROJECT]
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def pinned(revision: str, percent: int, tag: str = "") -> dict[str, Any]:
    return {"type": "REVISION", "revision": revision, "percent": percent, "tag": tag}


@dataclass
class Stack:
    run: CloudRunEmulator
    slack: SlackEmulator
    env: dict[str, str]

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "controller", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def add(self, traffic: list[dict[str, Any]], *, newest: bool = False) -> None:
        revisions = [
            RevisionSpec(name=OLDEST, create_time=NOW - datetime.timedelta(days=3)),
            RevisionSpec(name=PREVIOUS, create_time=NOW - datetime.timedelta(days=2)),
            RevisionSpec(name=CURRENT, create_time=NOW - datetime.timedelta(hours=5)),
        ]
        if newest:
            revisions.append(RevisionSpec(name=NEXT, create_time=NOW - datetime.timedelta(minutes=5)))
        self.run.add_service(PROJECT, REGION, SERVICE, revisions=revisions, traffic=traffic)

    def traffic(self) -> list[tuple[str, int, str]]:
        return [(t["revision"], t["percent"], t["tag"]) for t in self.run.traffic(PROJECT, REGION, SERVICE)]

    def last_good(self) -> str:
        return read_ledger(self.run.service(PROJECT, REGION, SERVICE).get("annotations", {})).last_good


@pytest.fixture(scope="module")
def stack_() -> Iterator[Stack]:
    with CloudRunEmulator() as run, MonitoringEmulator() as monitoring, SlackEmulator() as slack:
        env = function_env(run.url, slack.api_url, monitoring=monitoring.target)
        env = {k: v for k, v in env.items() if k.lower() not in PROXY_VARS}
        yield Stack(run, slack, env)


@pytest.fixture
def stack(stack_: Stack) -> Stack:
    stack_.run.reset()
    stack_.slack.reset()
    return stack_


def test_undo_is_accepted_and_the_next_tick_does_not_start_a_canary(stack: Stack) -> None:
    """Point 1: rollback → undo (a false alarm) → canary tick: nothing moves."""
    stack.add([pinned(CURRENT, 100)])
    assert stack("rollback", *WHERE, "--reason", "5xx?").returncode == 0
    assert stack.traffic() == [(PREVIOUS, 100, "")]
    undone = stack("undo", *WHERE, "--reason", "false alarm")
    assert undone.returncode == 0, undone.stderr
    assert stack.last_good() == CURRENT
    tick = stack("canary", "tick", SERVICE, "--region", REGION, "--json")
    assert tick.returncode == 0, tick.stderr
    [report] = json.loads(tick.stdout)["services"]
    assert report["step"] == "none", report
    assert stack.traffic() == [(CURRENT, 100, "")]


def test_a_second_rollback_within_the_cooldown_is_refused_and_force_goes_further(stack: Stack) -> None:
    """Point 3: ``rollback`` twice from shell history never walks two revisions back by accident."""
    stack.add([pinned(CURRENT, 100)])
    first = stack("rollback", *WHERE, "--reason", "bad deploy", "--actor", "alice@example.com")
    assert first.returncode == 0, first.stderr
    again = stack("rollback", *WHERE, "--reason", "still bad?", "--json")
    assert again.returncode == 1
    refused = json.loads(again.stdout)
    assert refused["error"] == "recent_action"
    assert f"{SERVICE} was rolled back to {PREVIOUS} by alice@example.com at" in refused["message"]
    assert "--force" in refused["message"]
    assert stack.traffic() == [(PREVIOUS, 100, "")]  # nothing moved
    forced = stack("rollback", *WHERE, "--reason", "really older", "--force")
    assert forced.returncode == 0, forced.stderr
    assert stack.traffic() == [(OLDEST, 100, "")]


def test_a_dry_run_tells_only_the_caller(stack: Stack) -> None:
    """Point 5: no Slack post for ``--dry-run``."""
    stack.add([pinned(CURRENT, 100)])
    done = stack("rollback", *WHERE, "--reason", "what if", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert PREVIOUS in done.stdout
    done = stack("undo", *WHERE, "--dry-run")
    assert done.returncode == 1  # nothing to undo, still no post
    assert stack.slack.messages == []


def test_gate_on_a_fresh_service_records_stable_once_then_catches_a_deploy_to_100(stack: Stack) -> None:
    """Point 2: adopt is written (the gate does not repeat it) and a deploy straight to 100% is caught."""
    stack.add([pinned(CURRENT, 100)])
    first = stack("canary", "gate", SERVICE, "--region", REGION, "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["step"] == "adopt"
    assert stack.last_good() == CURRENT
    second = stack("canary", "gate", SERVICE, "--region", REGION, "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["step"] == "none"  # not adopted again
    # gcloud run deploy without --no-traffic: the new revision gets 100% straight away.
    stack.run.add_revision(PROJECT, REGION, SERVICE, RevisionSpec(name=NEXT, create_time=NOW))
    stack.run.set_traffic(PROJECT, REGION, SERVICE, [pinned(NEXT, 100)])
    caught = stack("canary", "gate", SERVICE, "--region", REGION, "--json")
    assert caught.returncode == 3, caught.stderr
    body = json.loads(caught.stdout)
    assert (body["step"], body["candidate"], body["stable"], body["percent"]) == ("start", NEXT, CURRENT, 10)
    assert stack.traffic()[:2] == [(CURRENT, 90, "stable"), (NEXT, 10, "candidate")]


def test_a_preview_revision_never_gets_traffic(stack: Stack) -> None:
    """Point 6: ``--no-traffic --tag pr-123`` is a preview, not a candidate; the first tick only records."""
    stack.add([pinned(CURRENT, 100), pinned(NEXT, 0, "pr-123")], newest=True)
    for _ in range(3):
        done = stack("canary", "tick", SERVICE, "--region", REGION)
        assert done.returncode == 0, done.stderr
    assert stack.traffic() == [(CURRENT, 100, ""), (NEXT, 0, "pr-123")]
    assert stack.last_good() == CURRENT


def test_validate_warns_when_a_step_cannot_hold_a_judgeable_minute(tmp_path: Path, stack: Stack) -> None:
    """Point 7: valid, but every step would hold until overdue."""
    policy = (ROOT / "policies" / "default.yaml").read_text()
    (tmp_path / "short.yaml").write_text(policy + "\n---\nname: short\nmatch: {services: [fast-*]}\n"
        "triggers: {error_rate: {above: 0.05}}\ncanary: {step_for: 200s, metric_lag: 3m}\n")  # fmt: skip
    done = stack("validate", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning:" in done.stderr and "short.yaml" in done.stderr
    assert "less than one judgeable minute" in done.stderr
