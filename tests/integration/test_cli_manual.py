"""``python -m controller rollback | undo | hold | release | status`` as subprocesses, against the
Cloud Run and Slack emulators (``ROLLBACK_RUN_ENDPOINT``, ``ROLLBACK_SLACK_API_URL``): readable
tables by default, ``--json`` on request, exit codes 0 (done), 1 (refused / not found), 2 (usage).
"""

from __future__ import annotations

import datetime
import json
import os
import re
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


# -- issue 10: errors an operator can act on, wording, the fleet view ---------------------------


def test_unknown_service_names_the_services_there(cli: Cli) -> None:
    cli.run.add_service(PROJECT, REGION, "cart", revisions=[RevisionSpec(name="cart-00001-aaa", create_time=T0)])
    done = cli("status", "checkout-api", "--region", REGION, "--project", PROJECT)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"python -m controller status: error: checkout-api not found in {PROJECT}/{REGION} "
        "(services there: cart, checkout)"
    )


def test_refusals_name_the_flag_and_times_read_to_the_second(cli: Cli) -> None:
    assert cli("rollback", *WHERE, "--reason", "bad deploy").returncode == 0
    done = cli("rollback", *WHERE, "--reason", "back to it", "--to", SUSPECT)
    assert done.returncode == 1
    assert "pass --force" in done.stderr and "pass force" not in done.stderr
    held = cli("hold", *WHERE, "--reason", "investigating", "--actor", "bob@example.com")
    assert held.returncode == 0, held.stderr
    assert "on hold: on hold" not in held.stdout and "is on hold: on hold" not in held.stdout
    [_, hold_message] = cli.slack.wait_for_messages(2)
    assert hold_message["text"].count("on hold") == 1, hold_message["text"]
    status = cli("status", *WHERE)
    assert re.search(r"on hold: +since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC by bob@example.com", status.stdout)
    assert "last action: manual rollback " in status.stdout
    assert "manual-rollback" not in status.stdout and "+00:00" not in status.stdout


def test_status_takes_no_actor(cli: Cli) -> None:
    done = cli("status", *WHERE, "--actor", "alice@example.com")
    assert done.returncode == 2
    assert "unrecognized arguments: --actor" in done.stderr


def test_log_lines_only_on_request(cli: Cli) -> None:
    done = cli("hold", *WHERE)
    assert done.returncode == 0 and done.stderr == ""
    done = cli("release", *WHERE, "-v")
    assert json.loads(done.stderr.strip().splitlines()[-1])["event"] == "manual"


def test_fleet_status_lists_every_service_in_the_region(cli: Cli) -> None:
    cli.run.add_service(PROJECT, REGION, "cart", revisions=[RevisionSpec(name="cart-00001-aaa", create_time=T0)])
    assert cli("rollback", *WHERE, "--reason", "bad deploy", "--actor", "alice@example.com").returncode == 0
    assert cli("hold", *WHERE, "--reason", "investigating").returncode == 0
    done = cli("status", "--region", REGION, "--project", PROJECT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"Services in {PROJECT}/{REGION}:"
    assert "  cart: LATEST 100%" in lines
    assert f"  checkout: {PREVIOUS} 100%" in lines
    assert any(
        re.fullmatch(rf"    last action: manual rollback {SUSPECT} → {PREVIOUS} by alice@example.com at .* UTC", line)
        for line in lines
    ), lines
    assert any(line.startswith("    on hold:     since ") and "(investigating)" in line for line in lines)
    assert f"    quarantined: {SUSPECT}" in lines
    code, body = cli.json("status", "--region", REGION, "--project", PROJECT)
    assert code == 0
    assert [s["service"]["service"] for s in body["services"]] == ["cart", "checkout"]
    checkout = body["services"][1]
    assert checkout["last_action"]["kind"] == "manual-rollback" and checkout["quarantined"] == [SUSPECT]
    assert checkout["hold"]["reason"] == "investigating" and checkout["canary"] is None


def test_no_credentials_is_one_line(cli: Cli, tmp_path: Path) -> None:
    env = {k: v for k, v in cli.env.items() if k != "ROLLBACK_RUN_ENDPOINT"}
    env |= {"HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"), "GCE_METADATA_HOST": "127.0.0.1:9"}
    env |= {"GCE_METADATA_IP": "127.0.0.1:9"}
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    done = subprocess.run(
        [sys.executable, "-m", "controller", "status", *WHERE],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("python -m controller status: error: no Google credentials")
    assert "gcloud auth application-default login" in line
