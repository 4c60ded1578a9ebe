"""The lab: shipped scenarios on the emulators, the README's bound, no false rollback, the CLI."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from controller.surfaces import cli
from controller.surfaces.lab import LabStack, load_scenario, quiet_logs, run_scenario, scenario_paths

ROOT = Path(__file__).resolve().parent.parent.parent
LAB = ROOT / "samples" / "lab"
# README "Time to rollback": with the default policy (for: 2m) and Cloud Run's 180 s ingestion lag,
# traffic is back on the previous revision within 8 minutes of a blatantly bad deploy.
BOUND_S = 8 * 60
SEEDS = range(1, 6)


@pytest.fixture(scope="module")
def stack() -> Iterator[LabStack]:
    with quiet_logs(), LabStack() as s:
        yield s


def test_every_shipped_scenario_loads() -> None:
    names = {load_scenario(p).name for p in scenario_paths()}
    assert names == {"bad-deploy", "slow-deploy", "subtle-deploy", "healthy-deploy", "previous-also-bad", "canary"}


@pytest.mark.parametrize("name", ["bad-deploy", "slow-deploy", "canary"])
def test_a_bad_deploy_is_shifted_within_the_readme_bound(stack: LabStack, name: str) -> None:
    scenario = load_scenario(LAB / f"{name}.yaml")
    for seed in SEEDS:
        result = run_scenario(stack, scenario, "default", seed)
        shifted = result.figures()["time_to_traffic_shifted_s"]
        assert result.outcome == "rolled-back", (seed, result.marks)
        assert shifted is not None and shifted <= BOUND_S, (seed, shifted)
        # The timeline is in order and complete.
        whats = [m.what for m in result.marks]
        for a, b in [("deploy", "first bad minute visible"), ("alert opened", "traffic shifted")]:
            assert whats.index(a) < whats.index(b)
        assert "recovery" in whats
        # After the shift the candidate serves nothing.
        shift_at = result.first("traffic shifted")
        assert shift_at is not None
        assert all(
            m.requests == 0
            for m in result.minutes
            if m.revision == result.candidate and m.end > shift_at.at + timedelta(minutes=2)
        )


def test_a_healthy_noisy_deploy_never_rolls_back(stack: LabStack) -> None:
    scenario = load_scenario(LAB / "healthy-deploy.yaml")
    for seed in range(1, 16):
        result = run_scenario(stack, scenario, "default", seed)
        assert result.outcome == "none", (seed, result.marks)


def test_previous_revision_as_bad_is_refused_not_rolled_back(stack: LabStack) -> None:
    result = run_scenario(stack, load_scenario(LAB / "previous-also-bad.yaml"), "default")
    assert result.outcome == "refused" and result.reason == "target-also-failing"
    assert result.first("traffic shifted") is None


def test_polls_act_through_the_same_controller(stack: LabStack) -> None:
    scenario = load_scenario(LAB / "bad-deploy.yaml")
    flagger = run_scenario(stack, scenario, "flagger")
    # Five failed 1-minute checks, the first visible after the minute and the lag.
    assert flagger.figures()["time_to_detect_s"] == 60 + 180 + 4 * 60
    assert flagger.outcome == "rolled-back"
    refused = run_scenario(stack, load_scenario(LAB / "previous-also-bad.yaml"), "crm")
    assert refused.outcome == "refused"


def _cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["lab", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_the_timeline_and_figures(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(str(LAB / "bad-deploy.yaml"), capsys=capsys)
    assert code == 0
    assert "alert opened" in out and "traffic shifted" in out and "time to traffic shifted:" in out


def test_cli_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "lab.png"
    code, out, err = _cli(str(LAB / "canary.yaml"), "--json", "--plot", str(png), capsys=capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"figures", "timeline", "minutes"}
    assert doc["figures"]["outcome"] == "rolled-back" and doc["figures"]["as_expected"] is True
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read"),
        ("name: x\ncandidate: {error_rate: 2}\n", "candidate.error_rate"),
        ("- a list\n", "a scenario is a mapping"),
        ("name: x\nbogus: 1\n", "bogus"),
        ("name: [unclosed\n", "not YAML"),
    ],
)
def test_cli_user_errors_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, expected: str
) -> None:
    path = tmp_path / "scenario.yaml"
    if content is not None:
        path.write_text(content)
    code, out, err = _cli(str(path), capsys=capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and expected in err and "Traceback" not in err


def test_unknown_policy_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text("name: x\npolicy: nope\n")
    err = io.StringIO()
    from controller.surfaces.cli_lab import run_command

    args = cli.build_parser().parse_args(["lab", str(path)])
    assert run_command(args, io.StringIO(), err) == 2
    assert "no rollback policy named 'nope'" in err.getvalue()
