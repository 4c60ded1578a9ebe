"""``python -m controller validate|schema`` run as a real subprocess: output lines and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller.surfaces.cli import build_parser, main, schema_text

ROOT = Path(__file__).resolve().parents[2]
INVALID = "tests/data/policies/invalid"


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH: the repository is not pip-installed; the CLI must run from a checkout.
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


DEFAULT_SUMMARY = (
    "default (policies/default.yaml:15): match any service; mode enforce; triggers error_rate > 5% for 2m "
    "(min 50 requests), latency_p95 > 2000 ms for 2m (min 50 requests), health 3 consecutive failures; "
    "canary 10/25/50/100% every 5m"
)


def test_validate_without_paths_reads_the_shipped_policies() -> None:
    done = run("validate")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [DEFAULT_SUMMARY, "OK: 1 policy in policies"]


def test_validate_without_paths_honours_rollback_policies(tmp_path: Path) -> None:
    done = run("validate", env={"ROLLBACK_POLICIES": "tests/data/policies/valid/canary-only.yaml"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "frontend-canary (tests/data/policies/valid/canary-only.yaml:2): match services frontend-*; "
        "mode enforce; triggers none; canary 20/100% every 10m",
        "OK: 1 policy in tests/data/policies/valid/canary-only.yaml",
    ]


def test_validate_several_paths_as_one_set() -> None:
    done = run("validate", "policies", "policies/examples")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == DEFAULT_SUMMARY
    assert [line.split(" ")[0] for line in lines[:-1]] == [
        "default",
        "tier-critical",
        "tier-batch",
        "recommendations-trial",
        "payments-prod",
    ]
    assert lines[-1] == "OK: 5 policies in policies, policies/examples"


@pytest.mark.parametrize(
    ("paths", "stdout", "stderr"),
    [
        (
            [f"{INVALID}/ratio-not-percent.yaml"],
            [
                f"{INVALID}/ratio-not-percent.yaml:5:5: triggers.error_rate.above: Input should be less than 1 (a ratio: 0.05 means 5%)"
            ],
            f"1 problem in {INVALID}/ratio-not-percent.yaml",
        ),
        (
            [f"{INVALID}/typo-key.yaml", f"{INVALID}/syntax-error.yaml"],
            [
                f"{INVALID}/typo-key.yaml:6:5: triggers.error_rate.min_request: unknown key 'min_request'; "
                "did you mean 'min_requests'?",
                f"{INVALID}/typo-key.yaml:7:3: triggers.helth: unknown key 'helth'; did you mean 'health'?",
                f"{INVALID}/syntax-error.yaml:4:9: YAML syntax error: expected ',' or '}}', but got ':'",
            ],
            f"3 problems in {INVALID}/typo-key.yaml, {INVALID}/syntax-error.yaml",
        ),
        (
            [f"{INVALID}/duplicate-names"],
            [
                f"{INVALID}/duplicate-names/b.yaml:2:1: name: duplicate policy name 'shared' "
                f"(first defined at {INVALID}/duplicate-names/a.yaml:1:1)",
                f"{INVALID}/duplicate-names/b.yaml:7:1: match: policy 'same-match' has the same match as policy "
                f"'shared' ({INVALID}/duplicate-names/a.yaml:2:1); neither is more specific, so narrow or merge them",
            ],
            f"2 problems in {INVALID}/duplicate-names",
        ),
    ],
    ids=["one-problem", "two-files-every-problem", "duplicate-names-across-files"],
)
def test_validate_reports_problems_and_exits_1(paths: list[str], stdout: list[str], stderr: str) -> None:
    done = run("validate", *paths)
    assert done.returncode == 1
    assert done.stdout.splitlines() == stdout
    assert done.stderr.splitlines() == [stderr]


@pytest.mark.parametrize(
    ("args", "stderr_contains"),
    [
        (["validate", "no/such/dir"], "no such file or directory: no/such/dir"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
        (["schema", "--bogus"], "unrecognized arguments: --bogus"),
    ],
    ids=["missing-path", "unknown-command", "no-command", "unknown-option"],
)
def test_usage_errors_exit_2(args: list[str], stderr_contains: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert stderr_contains in done.stderr


def test_schema_prints_the_shipped_file() -> None:
    done = run("schema")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (ROOT / "deploy" / "policy.schema.json").read_text(encoding="utf-8")
    assert json.loads(done.stdout)["title"] == "Cloud Run rollback policy"


def test_schema_writes_a_file(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    done = run("schema", "--output", str(target))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert target.read_text(encoding="utf-8") == schema_text()


def test_cli_stays_light() -> None:
    """The CLI must not pull in the Google or Slack clients just to lint YAML.

    (A bare ``google.cloud`` namespace module may be present: *-nspkg.pth files create it at startup.)
    """
    code = (
        "import sys, controller.surfaces.cli; "
        "heavy = sorted(m for m in sys.modules "
        "if m.startswith(('google.cloud.', 'google.api_core', 'slack_sdk', 'grpc'))); "
        "print(heavy)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"


# -- in-process: the parser is built for more commands to come ------------------------------


def test_main_returns_exit_codes_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "policies")]) == 0
    assert main(["validate", str(ROOT / INVALID / "ratio-not-percent.yaml")]) == 1
    assert main(["--help"]) == 0
    assert main(["validate", "--nope"]) == 2
    out = capsys.readouterr().out
    assert "triggers.error_rate.above: Input should be less than 1" in out


def test_every_command_is_documented() -> None:
    parser = build_parser()
    [subparsers] = [a for a in parser._actions if a.dest == "command"]
    commands = sorted(subparsers.choices or {})
    assert {"schema", "validate", "demo"} <= set(commands)
    docs = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    assert [c for c in commands if f"rollback-controller {c}" not in docs] == []  # the installed command
