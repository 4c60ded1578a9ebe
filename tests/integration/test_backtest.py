"""The backtest over a seeded week in the emulators: finds the bad deploy, refuses the outage one,
ignores the healthy ones, reads with paging, and its --json matches the documented shape."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.backtest_sources import monitoring_client, read_revisions
from controller.adapters.monitoring import MonitoringClient
from controller.adapters.policy_files import DEFAULT_POLICY_PATH, load_policies
from controller.app.backtest import run_backtest
from controller.core.backtest_model import JSON_SHAPE, Backtest
from controller.core.state import ServiceRef
from controller.emulator.cloudrun import CloudRunEmulator
from controller.emulator.history import Seeded, seed_week
from controller.emulator.monitoring import MonitoringEmulator
from controller.surfaces import cli
from controller.surfaces.cli_backtest import run_command

UNTIL = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass
class Week:
    run: CloudRunEmulator
    monitoring: MonitoringEmulator
    seeded: Seeded

    @property
    def env(self) -> dict[str, str]:
        return {"ROLLBACK_RUN_ENDPOINT": self.run.url, "ROLLBACK_MONITORING_ENDPOINT": self.monitoring.target}


@pytest.fixture(scope="module")
def week() -> Iterator[Week]:
    with CloudRunEmulator() as run, MonitoringEmulator() as monitoring:
        yield Week(run, monitoring, seed_week(run, monitoring, until=UNTIL))


def _backtest(week: Week, *, page_size: int = 0) -> Backtest:
    s = week.seeded
    ref = ServiceRef(project=s.project, region=s.region, service=s.service)
    policy = load_policies(DEFAULT_POLICY_PATH).get("default")
    assert policy is not None
    reader = monitoring_client(week.monitoring.target)
    try:
        with MonitoringClient(week.monitoring.target) as evidence:
            return run_backtest(
                ref,
                policy,
                read_revisions(week.run.url, ref),
                evidence,
                reader,
                since=s.since,
                until=s.until,
                err=io.StringIO(),
                page_size=page_size,
            )
    finally:
        reader.transport.close()


@pytest.fixture(scope="module")
def result(week: Week) -> Backtest:
    return _backtest(week)


def test_finds_the_bad_deploy_refuses_the_outage_and_ignores_healthy_ones(week: Week, result: Backtest) -> None:
    by = {d.expect: d for d in week.seeded.deploys}
    bad, outage = by["rollback"], by["refuse"]
    healthy = {d.revision for d in week.seeded.deploys if d.expect == "none"}
    assert [(i.suspect, i.action) for i in result.incidents] == [
        (outage.revision, "refuse"),
        (bad.revision, "rollback"),
    ]
    refused, rolled = result.incidents
    # At the right time: the 2-minute condition is met on the third minute after the deploy.
    assert bad.at < rolled.opened_at <= bad.at + timedelta(minutes=5)
    assert rolled.target == outage.revision  # the revision serving before it
    assert rolled.closed_at is not None and rolled.closed_at > bad.at + timedelta(minutes=45)
    assert refused.reason.startswith("target-also-failing")
    assert not healthy & {i.suspect for i in result.incidents}
    assert result.summary() == {
        "incidents": 2,
        "would_roll_back": 1,
        "refused": 1,
        "notify": 0,
        "no_deploy_nearby": 0,
        "suppressed": 0,
        "revisions": 5,
        "minutes": 7 * 24 * 60,
    }


def test_paging_gives_the_same_answer(week: Week, result: Backtest) -> None:
    before = len(week.monitoring.calls)
    paged = _backtest(week, page_size=1)
    tokens = [c for c in week.monitoring.calls[before:] if c.page_token]
    assert tokens, "the reader never asked for a second page"
    assert [i.to_json() for i in paged.incidents] == [i.to_json() for i in result.incidents]


def _check(schema: dict[str, Any], value: Any, where: str = "$") -> None:
    """The subset of JSON Schema that JSON_SHAPE uses (type, enum, required, properties, items)."""
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        python = {"object": dict, "array": list, "string": str, "integer": int, "null": type(None), "number": float}
        assert any(isinstance(value, python[n]) for n in names), f"{where}: {value!r} is not {names}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing {key}"
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(props), f"{where}: unexpected {set(value) - set(props)}"
        for key, sub in props.items():
            if key in value:
                _check(sub, value[key], f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(schema["items"], item, f"{where}[{i}]")


def test_cli_json_matches_the_documented_shape(week: Week, tmp_path: Path) -> None:
    s = week.seeded
    png = tmp_path / "backtest.png"
    argv = ["backtest", s.service, "--region", s.region, "--project", s.project, "--json", "--plot", str(png)]
    out, err = io.StringIO(), io.StringIO()
    code = run_command(cli.build_parser().parse_args(argv), out, err, env=week.env, now=UNTIL)
    assert code == 0, err.getvalue()
    doc = json.loads(out.getvalue())
    _check(JSON_SHAPE, doc)
    assert doc["policy"] == "default" and doc["summary"]["would_roll_back"] == 1
    assert "reading" in err.getvalue()  # progress on stderr, the document alone on stdout
    assert png.read_bytes()[:4] == b"\x89PNG"
    # The schema can fail: a missing key is caught.
    broken = dict(doc)
    del broken["summary"]
    with pytest.raises(AssertionError):
        _check(JSON_SHAPE, broken)


def test_docs_describe_the_same_shape() -> None:
    text = (ROOT / "docs" / "backtest.md").read_text()
    for key in ("opened_at", "closed_at", "trigger", "suspect", "action", "target", "reason", "evidence", "summary"):
        assert f"`{key}`" in text


@pytest.mark.parametrize(
    ("argv", "env", "code", "expected"),
    [
        (["--region", "us-central1"], {}, 2, "no project"),
        (["--region", "us-central1", "--project", "p", "--since", "7 days"], {}, 2, "--since"),
        (["--region", "us-central1", "--project", "p", "--since", "90d"], {}, 2, "42d"),
        (["--region", "us-central1", "--project", "p", "--policy", "nope"], {}, 2, "no policy named 'nope'"),
        (["--region", "us-central1", "--project", "demo-proj"], {"svc": "missing"}, 2, "not found in Cloud Run"),
        (["--region", "us-central1", "--project", "demo-proj"], {"run": "closed"}, 1, "cannot list revisions"),
    ],
)
def test_cli_user_errors_are_one_line(
    week: Week, argv: list[str], env: dict[str, str], code: int, expected: str
) -> None:
    service = env.get("svc", week.seeded.service)
    environ = dict(week.env)
    if env.get("run") == "closed":
        with socket.socket() as sock:  # a port nobody listens on any more
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        environ["ROLLBACK_RUN_ENDPOINT"] = f"http://127.0.0.1:{port}"
    out, err = io.StringIO(), io.StringIO()
    args = cli.build_parser().parse_args(["backtest", service, *argv])
    assert run_command(args, out, err, env=environ, now=UNTIL) == code
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in err.getvalue()
    assert out.getvalue() == ""
