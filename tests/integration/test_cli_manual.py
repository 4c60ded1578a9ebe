"""``python -m controller rollback | undo | hold | release | status`` as subprocesses, against the
Cloud Run and Slack emulators (``ROLLBACK_RUN_ENDPOINT``, ``ROLLBACK_SLACK_API_URL``): readable
tables by default, ``--json`` on request, exit codes 0 (done), 1 (refused / not found), 2 (usage).
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec
from controller.emulator.slack import SlackEmulator

ROOT = Path(__file__).resolve().parents[2]
PROJECT, REGION, SERVICE = "demo-proj", "us-central1", "checkout"
T0 = datetime.datetime(2024, 6, 1, 12, 0, tzinfo=datetime.UTC)
OLDEST, PREVIOUS, SUSPECT = "checkout-00040-aaa", "checkout-00041-abc", "checkout-00042-xyz"
LATEST_100 = [{"type": "LATEST", "revision": "", "percent": 100, "tag": ""}]
PREVIOUS_100 = [{"type": "REVISION", "revision": PREVIOUS, "percent": 100, "tag": ""}]
WHERE = [SERVICE, "--region", REGION, "--project", PROJECT]


@dataclass
class Cli:
    run: CloudRunEmulator
    slack: SlackEmulator
    env: dict[str, str]

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "controller", *args],
            cwd=ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def json(self, *args: str) -> tuple[int, Any]:
        done = self(*args, "--json")
        return done.returncode, json.loads(done.stdout)

    def traffic(self) -> list[dict[str, Any]]:
        return self.run.traffic(PROJECT, REGION, SERVICE)


@pytest.fixture(scope="module")
def emulators() -> Iterator[tuple[CloudRunEmulator, SlackEmulator]]:
    with CloudRunEmulator() as run, SlackEmulator() as slack:
        yield run, slack


@pytest.fixture
def cli(emulators: tuple[CloudRunEmulator, SlackEmulator]) -> Cli:
    run, slack = emulators
    run.reset()
    slack.reset()
    run.add_service(
        PROJECT,
        REGION,
        SERVICE,
        revisions=[
            RevisionSpec(name=OLDEST, create_time=T0 - datetime.timedelta(days=3)),
            RevisionSpec(name=PREVIOUS, create_time=T0 - datetime.timedelta(days=2)),
            RevisionSpec(name=SUSPECT, create_time=T0 - datetime.timedelta(minutes=10)),
        ],
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ROLLBACK_", "SLACK_", "GOOGLE_")) and k.lower() not in ("http_proxy", "https_proxy")
    }
    env.update(
        {
            "ROLLBACK_RUN_ENDPOINT": run.url,
            "ROLLBACK_SLACK_API_URL": slack.api_url,
            "SLACK_BOT_TOKEN": "xoxb-cli-test",
            "SLACK_CHANNEL": "#deploys",
        }
    )
    return Cli(run, slack, env)


def test_status_table_and_json(cli: Cli) -> None:
    done = cli("status", *WHERE)
    assert done.returncode == 0, done.stderr
    assert "Traffic:" in done.stdout and "LATEST" in done.stdout
    assert SUSPECT in done.stdout and "QUARANTINED" in done.stdout
    code, status = cli.json("status", *WHERE)
    assert code == 0
    assert status["traffic"] == LATEST_100
    assert [r["name"] for r in status["revisions"]] == [SUSPECT, PREVIOUS, OLDEST]
    assert status["quarantined"] == []


def test_rollback_undo_and_their_refusals(cli: Cli) -> None:
    done = cli("rollback", *WHERE, "--reason", "bad deploy", "--actor", "alice@example.com", "--log-json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Rolled back {SERVICE}")
    assert PREVIOUS in done.stdout
    assert cli.traffic() == PREVIOUS_100
    log_line = json.loads(done.stderr.strip().splitlines()[-1])  # the action's structured log line
    assert (log_line["event"], log_line["actor"], log_line["action"]) == ("manual", "alice@example.com", "rollback")
    [message] = cli.slack.wait_for_messages(1)
    assert "alice@example.com" in json.dumps(message["blocks"])

    code, status = cli.json("status", *WHERE)
    assert [q["revision"] for q in status["quarantined"]] == [SUSPECT]

    code, refused = cli.json("rollback", *WHERE, "--reason", "again", "--to", PREVIOUS)
    assert code == 1
    assert refused["error"] == "already_serving"

    code, undone = cli.json("undo", *WHERE)
    assert code == 0
    assert undone["traffic"] == LATEST_100 == cli.traffic()

    done = cli("undo", *WHERE)
    assert done.returncode == 1
    assert done.stderr.startswith("python -m controller undo: refused: ")
    assert "nothing_to_undo" not in done.stderr  # the guard's name is for --json, not for people


def test_rollback_dry_run_and_unknown_revision(cli: Cli) -> None:
    code, result = cli.json("rollback", *WHERE, "--reason", "x", "--dry-run")
    assert code == 0
    assert result["dry_run"] is True and result["to_revision"] == PREVIOUS
    assert cli.run.patches == []
    done = cli("rollback", *WHERE, "--reason", "x", "--to", "checkout-00099-zzz")
    assert done.returncode == 1
    assert "checkout-00099-zzz" in done.stderr


def test_hold_and_release(cli: Cli) -> None:
    code, held = cli.json("hold", *WHERE, "--reason", "investigating", "--actor", "bob@example.com")
    assert code == 0
    assert held["hold"]["by"] == "bob@example.com"
    done = cli("status", *WHERE)
    assert "on hold:     since" in done.stdout and "bob@example.com" in done.stdout
    done = cli("release", *WHERE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Released {SERVICE}")
    code, again = cli.json("release", *WHERE)
    assert code == 0 and again["changed"] is False


def test_unknown_service_exits_1(cli: Cli) -> None:
    done = cli("status", "nope", "--region", REGION, "--project", PROJECT)
    assert done.returncode == 1
    assert "not found" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["status", SERVICE], id="no-region"),
        pytest.param(["rollback", *WHERE], id="rollback-without-reason"),
        pytest.param(["status", SERVICE, "--region", REGION], id="no-project-anywhere"),
    ],
)
def test_usage_errors_exit_2(cli: Cli, args: list[str]) -> None:
    done = cli(*args)
    assert done.returncode == 2
    assert done.stderr


def test_project_defaults_to_google_cloud_project(cli: Cli) -> None:
    done = cli("status", SERVICE, "--region", REGION, "--json", GOOGLE_CLOUD_PROJECT=PROJECT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["service"]["project"] == PROJECT
