"""``python -m controller canary ...`` as a subprocess against the emulators: the gate's exit codes
(0 pass, 1 fail, 3 inconclusive, 2 usage, 4 other error) are what CI pipelines branch on.

The CLI runs on the real clock; emulator state is laid out so that the canary is promoted, rolled
back (by the gate's own tick, on simulated traffic up to the real "now"), or still in progress.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.canary import CanaryState
from controller.demo import PROJECT, REGION, function_env
from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec
from controller.emulator.monitoring import MonitoringEmulator
from controller.emulator.slack import SlackEmulator
from controller.emulator.traffic import RevisionProfile, TrafficSimulator
from controller.ledger import Ledger, read_ledger, write_ledger

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime.datetime(2024, 6, 1, 12, 0, tzinfo=datetime.UTC)
STABLE, CANDIDATE = "checkout-00041-abc", "checkout-00042-xyz"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
NO_CANARY = """
name: alerts-only
match: {services: ["nocanary-*"]}
triggers:
  error_rate: {above: 0.05, for: 2m}
"""


@dataclass
class Stack:
    run: CloudRunEmulator
    monitoring: MonitoringEmulator
    slack: SlackEmulator
    env: dict[str, str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "controller", "canary", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def deploy(self, service: str = "checkout", *, ledger: Ledger | None = None, percent: int = 0) -> None:
        traffic = [{"type": "REVISION", "revision": STABLE, "percent": 100 - percent}]
        if percent:
            traffic.append({"type": "REVISION", "revision": CANDIDATE, "percent": percent})
        self.run.add_service(
            PROJECT,
            REGION,
            service,
            revisions=[
                RevisionSpec(name=STABLE, create_time=T0 - datetime.timedelta(days=2)),
                RevisionSpec(name=CANDIDATE, create_time=T0 - datetime.timedelta(minutes=10)),
            ],
            traffic=traffic,
            annotations=write_ledger(ledger, {}) if ledger else None,
        )

    def ledger(self, service: str = "checkout") -> Ledger:
        return read_ledger(self.run.service(PROJECT, REGION, service).get("annotations", {}))


@pytest.fixture(scope="module")
def stack_(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    policies = tmp_path_factory.mktemp("cli-canary-policies")
    (policies / "default.yaml").write_text((ROOT / "policies" / "default.yaml").read_text())
    (policies / "more.yaml").write_text(NO_CANARY)
    # The canary's judged windows end at the tick (issue 10): ingestion lag off here.
    lag_off = MonitoringEmulator(ingestion_lag=datetime.timedelta(0))
    with CloudRunEmulator() as run, lag_off as monitoring, SlackEmulator() as slack:
        env = function_env(run.url, slack.api_url, monitoring=monitoring.target, ROLLBACK_POLICIES=str(policies))
        env = {k: v for k, v in env.items() if k.lower() not in PROXY_VARS}
        yield Stack(run, monitoring, slack, env)


@pytest.fixture
def stack(stack_: Stack) -> Stack:
    stack_.run.reset()
    stack_.monitoring.reset()
    stack_.slack.reset()
    return stack_


def gate(stack: Stack, *extra: str) -> subprocess.CompletedProcess[str]:
    return stack.cli("gate", "checkout", "--region", REGION, *extra)


def test_gate_exits_3_while_the_canary_is_in_progress(stack: Stack) -> None:
    stack.deploy()
    done = gate(stack)
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith(f"INCONCLUSIVE: {CANDIDATE}")
    done = gate(stack, "--json")
    assert done.returncode == 3, done.stderr
    body = json.loads(done.stdout)
    assert (body["verdict"], body["step"], body["percent"]) == ("inconclusive", "wait", 10)
    assert '"event": "canary"' in done.stderr  # the JSON log line goes to stderr, stdout stays parseable


def test_gate_exits_0_once_promoted(stack: Stack) -> None:
    now = datetime.datetime.now(datetime.UTC)
    cs = CanaryState(
        candidate=CANDIDATE, stable=STABLE, step=3, step_started_at=now - datetime.timedelta(minutes=1),
        promoted_at=now - datetime.timedelta(minutes=1), checks=3,
    )  # fmt: skip
    stack.deploy(ledger=Ledger().with_last_good(STABLE).model_copy(update={"canary": cs.to_ledger()}), percent=100)
    done = gate(stack, "--revision", CANDIDATE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"PASS: {CANDIDATE}")


def test_gate_exits_1_when_its_tick_rolls_the_candidate_back(stack: Stack) -> None:
    now = datetime.datetime.now(datetime.UTC).replace(second=0, microsecond=0)
    cs = CanaryState(candidate=CANDIDATE, stable=STABLE, step=0, step_started_at=now - datetime.timedelta(minutes=6))
    stack.deploy(ledger=Ledger().with_last_good(STABLE).model_copy(update={"canary": cs.to_ledger()}), percent=10)
    sim = TrafficSimulator(
        stack.run, stack.monitoring, project=PROJECT, region=REGION, service="checkout", seed=5,
        start=now - datetime.timedelta(minutes=6),
    )  # fmt: skip
    sim.set_profile(STABLE, RevisionProfile(error_rate=0.005))
    sim.set_profile(CANDIDATE, RevisionProfile(error_rate=0.08))
    sim.run_until(now)
    done = gate(stack, "--json")
    assert done.returncode == 1, done.stderr
    body = json.loads(done.stdout)
    assert (body["verdict"], body["step"]) == ("fail", "rollback")
    assert any(line.startswith("5xx: candidate") for line in body["evidence"])
    assert stack.ledger().is_quarantined(CANDIDATE)
    # Asked again (a CI retry), it stays a fail: the revision is quarantined.
    assert gate(stack, "--revision", CANDIDATE).returncode == 1


def test_gate_exits_1_for_a_quarantined_revision(stack: Stack) -> None:
    stack.deploy(ledger=Ledger().with_last_good(STABLE).quarantine(CANDIDATE, reason="canary: p95", now=T0))
    done = gate(stack)
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith(f"FAIL: {CANDIDATE}")


def test_usage_and_other_errors(stack: Stack) -> None:
    stack.deploy("nocanary-api")
    assert stack.cli("gate", "checkout").returncode == 2  # --region is required
    missing = gate(stack)  # no such service in the emulator
    assert missing.returncode == 4, missing.stderr
    assert "not found" in missing.stderr
    no_policy = stack.cli("gate", "nocanary-api", "--region", REGION)
    assert no_policy.returncode == 4 and "no policy with a canary block" in no_policy.stderr


def test_tick_and_status(stack: Stack) -> None:
    stack.deploy()
    stack.deploy("nocanary-api")
    done = stack.cli("tick", "--region", REGION, "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert [(r["service"]["service"], r["step"]) for r in body["services"]] == [("checkout", "start")]
    status = stack.cli("status", "checkout", "--region", REGION)
    assert status.returncode == 0, status.stderr
    assert f"canary:    {CANDIDATE} vs {STABLE}, at 10%" in status.stdout
    assert stack.cli("tick").returncode == 2  # no --region and no ROLLBACK_REGIONS
