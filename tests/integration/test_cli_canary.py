"""``python -m controller canary ...`` as a subprocess against the emulators: the gate's exit codes
(0 pass, 1 fail, 3 inconclusive, 2 usage, 4 other error) are what CI pipelines branch on.

The CLI runs on the real clock; emulator state is laid out so that the canary is promoted, rolled
back (by the gate's own tick, on simulated traffic up to the real "now"), or still in progress.
"""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.core.ledger import CanaryState, Ledger, read_ledger, write_ledger
from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec
from controller.emulator.monitoring import MonitoringEmulator
from controller.emulator.slack import SlackEmulator
from controller.emulator.traffic import RevisionProfile, TrafficSimulator
from controller.surfaces.demo import PROJECT, REGION, function_env

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
        # --no-traffic --tag candidate (or a share); the controller already knows stable.
        traffic.append({"type": "REVISION", "revision": CANDIDATE, "percent": percent, "tag": "candidate"})
        ledger = ledger if ledger is not None else Ledger().with_last_good(STABLE)
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
    assert done.stderr == ""  # JSON log lines only on request
    done = gate(stack, "--json", "--log-json")
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
    stack.deploy(ledger=Ledger().with_last_good(STABLE).model_copy(update={"canary": cs}), percent=100)
    done = gate(stack, "--revision", CANDIDATE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"PASS: {CANDIDATE}")


def test_gate_exits_1_when_its_tick_rolls_the_candidate_back(stack: Stack) -> None:
    now = datetime.datetime.now(datetime.UTC).replace(second=0, microsecond=0)
    cs = CanaryState(candidate=CANDIDATE, stable=STABLE, step=0, step_started_at=now - datetime.timedelta(minutes=6))
    stack.deploy(ledger=Ledger().with_last_good(STABLE).model_copy(update={"canary": cs}), percent=10)
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


# -- issue 10: errors an operator can act on ----------------------------------------------------


def test_gate_on_an_unknown_service_names_the_services_there(stack: Stack) -> None:
    stack.deploy()
    done = stack.cli("gate", "checkout-api", "--region", REGION)
    assert done.returncode == 4, done.stderr
    assert done.stderr.strip() == (
        f"python -m controller canary gate: error: checkout-api not found in {PROJECT}/{REGION} "
        "(services there: checkout)"
    )
    assert "%24alt" not in done.stderr


def test_gate_on_a_revision_that_does_not_exist_is_an_error_not_inconclusive(stack: Stack) -> None:
    stack.deploy()
    done = gate(stack, "--revision", "checkout-00099-zzz")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "revision checkout-00099-zzz not found in checkout (revisions: " in done.stderr
    assert stack.run.patches == []


def test_gate_on_a_quarantined_revision_says_it_is_quarantined(stack: Stack) -> None:
    stack.deploy(ledger=Ledger().with_last_good(STABLE).quarantine(CANDIDATE, reason="canary: p95", now=T0))
    done = gate(stack, "--revision", CANDIDATE)
    assert done.returncode == 1, done.stderr
    assert f"{CANDIDATE} is quarantined since {T0:%Y-%m-%d %H:%M:%S} UTC: canary: p95" in done.stdout


def test_pass_shows_the_share_the_revision_really_serves(stack: Stack) -> None:
    now = datetime.datetime.now(datetime.UTC)
    cs = CanaryState(
        candidate=CANDIDATE, stable=STABLE, step=3, step_started_at=now - datetime.timedelta(minutes=1),
        promoted_at=now - datetime.timedelta(minutes=1), checks=3,
    )  # fmt: skip
    stack.deploy(ledger=Ledger().with_last_good(STABLE).model_copy(update={"canary": cs}), percent=100)
    done = gate(stack, "--revision", CANDIDATE)
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith(f"PASS: {CANDIDATE}") and first.endswith("serving 100%)"), first


def test_no_credentials_is_one_line_and_an_error_not_a_fail(stack: Stack, tmp_path: Path) -> None:
    env = {k: v for k, v in stack.env.items() if not k.startswith(("ROLLBACK_RUN", "ROLLBACK_MONITORING"))}
    env |= {"HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"), "GCE_METADATA_HOST": "127.0.0.1:9"}
    env |= {"GCE_METADATA_IP": "127.0.0.1:9", "GOOGLE_CLOUD_PROJECT": PROJECT}
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    done = subprocess.run(
        [sys.executable, "-m", "controller", "canary", "gate", "checkout", "--region", REGION],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 4, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "no Google credentials" in line and "gcloud auth application-default login" in line
    assert "ROLLBACK_RUN_ENDPOINT" in line and "Traceback" not in done.stderr


def test_cloud_run_unreachable_is_one_line_without_urllib3_text(stack: Stack) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "controller", "canary", "gate", "checkout", "--region", REGION],
        cwd=ROOT, env=stack.env | {"ROLLBACK_RUN_ENDPOINT": f"http://127.0.0.1:{closed}"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 4, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert f"cannot reach 127.0.0.1:{closed} (connection refused)" in line
    assert "HTTPConnectionPool" not in line and "%24alt" not in line


def test_fleet_status_shows_the_canary_step_and_its_real_share(stack: Stack) -> None:
    cs = CanaryState(candidate=CANDIDATE, stable=STABLE, step=1, step_started_at=T0)
    stack.deploy(ledger=Ledger().with_last_good(STABLE).model_copy(update={"canary": cs}), percent=25)
    done = subprocess.run(
        [sys.executable, "-m", "controller", "status", "--region", REGION],
        cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"  checkout: {STABLE} 75%, {CANDIDATE} 25%" in done.stdout.splitlines()
    assert f"    canary:      {CANDIDATE} vs {STABLE} (step 2, serving 25%)" in done.stdout.splitlines()
