"""The log-based metrics and the dashboard (deploy/telemetry) against the controller's real log lines.

The lines are captured, not written by hand: main.handle_alert runs in-process against the Cloud
Run, Monitoring and Slack emulators (the same path as tests/integration/test_alert_path.py), and a
canary is ticked with the real clients and the traffic simulator. Each stdout line becomes the
LogEntry Cloud Run's logging agent would make of it (tests/logquery.py), and every metric's
filter, label extractors and value extractor are evaluated on those entries.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from deliveries import rfc3339
from logquery import Unsupported, extract, extractor_field, matches, to_entry

import main
from controller.adapters import logs
from controller.adapters.cloudrun import CloudRunClient
from controller.adapters.monitoring import MonitoringClient
from controller.adapters.policy_files import load_policies
from controller.adapters.slack import WebApiNotifier
from controller.app.canary_control import CanaryControl
from controller.app.engine import reset_controller
from controller.app.settings import Settings
from controller.core.canary import Step
from controller.core.state import ServiceRef
from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec
from controller.emulator.monitoring import MonitoringEmulator
from controller.emulator.slack import SlackEmulator
from controller.emulator.traffic import RevisionProfile, TrafficSimulator
from controller.surfaces.demo import PROJECT, REGION, SERVICE

ROOT = Path(__file__).resolve().parents[2]
TELEMETRY = ROOT / "deploy" / "telemetry"
DATA = ROOT / "tests" / "data"
INCIDENT = json.loads((DATA / "incident-5xx-open.json").read_text())
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PREVIOUS, SUSPECT = "checkout-00041-abc", "checkout-00042-xyz"

CANARY_POLICY = """
name: canary
match: {services: ["shop"]}
triggers:
  error_rate: {above: 0.05, for: 2m, min_requests: 50}
canary: {steps: [10, 25, 50, 100], step_for: 5m, metric_lag: 3m, min_requests: 100}
"""


def metrics() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((TELEMETRY / "metrics").glob("*.json"))}


def delivery(doc: dict[str, Any] | bytes, n: int) -> CloudEvent:
    """A fresh delivery (published now, incident opened minutes ago): an old one would need fresh confirmation."""
    now = datetime.now(UTC)
    if isinstance(doc, dict):
        doc = copy.deepcopy(doc)
        doc["incident"]["started_at"] = int((now - timedelta(minutes=4)).timestamp())
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    when = rfc3339(now)
    attributes = {
        "specversion": "1.0",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "source": f"//pubsub.googleapis.com/projects/{PROJECT}/topics/rollback-alerts",
        "id": f"deploy-{n}",
        "time": when,
    }
    data = {
        "message": {
            "data": base64.b64encode(raw).decode(),
            "messageId": f"deploy-{n}",
            "publishTime": when,
            "attributes": {},
        },
        "subscription": f"projects/{PROJECT}/subscriptions/eventarc-sub",
    }
    return CloudEvent(attributes, data)


def alert_lines(run: CloudRunEmulator, slack: SlackEmulator, monitoring: MonitoringEmulator) -> list[str]:
    run.reset()
    run.add_service(
        PROJECT,
        REGION,
        SERVICE,
        revisions=[
            RevisionSpec(name=PREVIOUS, create_time=T0 - timedelta(days=2)),
            RevisionSpec(name=SUSPECT, create_time=T0 - timedelta(minutes=10)),
        ],
    )
    unknown = copy.deepcopy(INCIDENT)
    unknown["incident"]["resource"]["labels"]["service_name"] = "no-such-service"
    env = {
        "ROLLBACK_RUN_ENDPOINT": run.url,
        "ROLLBACK_MONITORING_ENDPOINT": monitoring.target,
        "ROLLBACK_SLACK_API_URL": slack.api_url,
        "SLACK_BOT_TOKEN": "xoxb-local-demo",
        "SLACK_CHANNEL": "#deploys",
        "GOOGLE_CLOUD_PROJECT": PROJECT,
    }
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("ROLLBACK_DRY_RUN", raising=False)
        reset_controller()
        try:
            main.handle_alert(delivery(INCIDENT, 1))  # rolled back
            main.handle_alert(delivery(INCIDENT, 2))  # already handled
            main.handle_alert(delivery(b"not json", 3))  # rejected
            main.handle_alert(delivery(unknown, 4))  # failed: no such service
        finally:
            reset_controller()
    assert run.applied_traffic_changes(PROJECT, REGION, SERVICE) == 1
    return out.getvalue().splitlines()


def canary_lines(run: CloudRunEmulator, slack: SlackEmulator, monitoring: MonitoringEmulator, tmp: Path) -> list[str]:
    run.reset()
    monitoring.reset()
    (tmp / "canary.yaml").write_text(CANARY_POLICY)
    stable, candidate = "shop-00001-aaa", "shop-00002-bbb"
    run.add_service(
        PROJECT,
        REGION,
        "shop",
        revisions=[
            RevisionSpec(name=stable, create_time=T0 - timedelta(days=2)),
            RevisionSpec(name=candidate, create_time=T0 - timedelta(minutes=1)),
        ],
        # CI deployed the candidate with --no-traffic --tag candidate (docs/canary.md).
        traffic=[
            {"type": "REVISION", "revision": stable, "percent": 100},
            {"type": "REVISION", "revision": candidate, "percent": 0, "tag": "candidate"},
        ],
    )
    sim = TrafficSimulator(
        run, monitoring, project=PROJECT, region=REGION, service="shop",
        requests_per_minute=2000, seed=7, start=T0 - timedelta(minutes=10),
    )  # fmt: skip
    good = RevisionProfile(error_rate=0.005, latency_ms=120.0)
    sim.set_profile(stable, good)
    sim.set_profile(candidate, good)
    sim.run_until(T0)
    client = MonitoringClient(monitoring.target)
    out = io.StringIO()
    try:
        notifier = WebApiNotifier("xoxb-test", "#deploys", slack.api_url)
        control = CanaryControl(
            CloudRunClient(run.url), client, notifier, load_policies(tmp), Settings(), lambda: sim.now
        )
        ref = ServiceRef(project=PROJECT, region=REGION, service="shop")
        with contextlib.redirect_stdout(out):
            logs.configure()
            steps = [control.tick(ref).step]
            for _ in range(10):  # bounded: a healthy candidate starts within a few ticks
                if Step.START in steps:
                    break
                sim.advance(1)
                steps.append(control.tick(ref).step)
            sim.advance(1)
            steps.append(control.tick(ref).step)  # a tick that changes nothing (waiting)
    finally:
        client.close()
    assert Step.START in steps and steps[-1] in (Step.WAIT, Step.NONE), steps
    return out.getvalue().splitlines()


@pytest.fixture(scope="module")
def entries(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    with CloudRunEmulator() as run, SlackEmulator() as slack, MonitoringEmulator() as monitoring:
        lines = alert_lines(run, slack, monitoring)
        lines += canary_lines(run, slack, monitoring, tmp_path_factory.mktemp("canary"))
    # Every line the controller wrote is one JSON object (Cloud Logging's structured form).
    return [to_entry(line) for line in lines if line.strip()]


def payloads(entries: list[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    return [e for e in entries if all(e["jsonPayload"].get(k) == v for k, v in where.items())]


def matched(metric: dict[str, Any], entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if matches(metric["filter"], e)]


def test_the_capture_holds_every_kind_of_line(entries: list[dict[str, Any]]) -> None:
    outcomes = [e["jsonPayload"].get("outcome") for e in payloads(entries, event="alert")]
    assert outcomes == ["acted", "no-change", "rejected", "failed"]
    canary = payloads(entries, event="canary")
    steps = [e["jsonPayload"]["step"] for e in canary]
    assert "start" in steps and steps[-1] in ("wait", "none"), steps
    assert all("labels" in e and "timestamp" in e for e in entries)  # special fields were lifted


def test_decisions_count_every_alert_delivery_by_outcome_and_reason(entries: list[dict[str, Any]]) -> None:
    metric = metrics()["rollback_decisions"]
    found = matched(metric, entries)
    assert found == payloads(entries, event="alert")
    ex = metric["labelExtractors"]
    acted = found[0]
    assert {k: extract(v, acted) for k, v in ex.items()} == {
        "outcome": "acted",
        "reason": "rolled-back",
        "trigger": "error_rate",
        "service": SERVICE,
    }
    assert [extract(ex["outcome"], e) for e in found] == ["acted", "no-change", "rejected", "failed"]
    assert extract(ex["reason"], found[1]) == "already-handled"


def test_time_to_shift_measures_only_traffic_shifts_from_the_incident_start(entries: list[dict[str, Any]]) -> None:
    metric = metrics()["rollback_time_to_shift"]
    [found] = matched(metric, entries)
    assert found["jsonPayload"]["outcome"] == "acted"
    value = extract(metric["valueExtractor"], found)
    assert value is not None
    started = datetime.fromisoformat(found["jsonPayload"]["incident"]["started_at"])
    logged = datetime.fromisoformat(found["timestamp"].replace("Z", "+00:00"))
    assert float(value) == pytest.approx((logged - started).total_seconds(), abs=5)
    assert extract(metric["labelExtractors"]["trigger"], found) == "error_rate"
    bounds = metric["bucketOptions"]["explicitBuckets"]["bounds"]
    assert bounds == sorted(bounds) and 60 in bounds


def test_canary_steps_count_ticks_that_changed_a_service(entries: list[dict[str, Any]]) -> None:
    metric = metrics()["rollback_canary_steps"]
    found = matched(metric, entries)
    assert found and all(e["jsonPayload"]["event"] == "canary" and e["jsonPayload"]["changed"] for e in found)
    start = [e for e in found if e["jsonPayload"]["step"] == "start"]
    assert [{k: extract(v, e) for k, v in metric["labelExtractors"].items()} for e in start] == [
        {"step": "start", "percent": "10", "service": "shop"}
    ]
    unchanged = [e for e in payloads(entries, event="canary") if not e["jsonPayload"]["changed"]]
    assert unchanged and not any(matches(metric["filter"], e) for e in unchanged)


@pytest.mark.parametrize("name", sorted(metrics()))
def test_every_label_has_an_extractor_that_names_a_written_field(name: str, entries: list[dict[str, Any]]) -> None:
    metric = metrics()[name]
    assert metric["name"] == name
    labels = {label["key"] for label in metric["metricDescriptor"].get("labels", [])}
    assert labels == set(metric.get("labelExtractors", {}))
    found = matched(metric, entries)
    for key, expression in metric.get("labelExtractors", {}).items():
        assert any(extract(expression, e) for e in found), (
            f"{name}: {key} = {extractor_field(expression)} is never written"
        )
    if metric["metricDescriptor"]["valueType"] == "DISTRIBUTION":
        assert "valueExtractor" in metric and "bucketOptions" in metric


def test_a_filter_on_a_field_the_controller_does_not_write_matches_nothing(entries: list[dict[str, Any]]) -> None:
    # The checks above can fail: a plausible but wrong field name finds no line.
    assert not [e for e in entries if matches('jsonPayload.decision.outcome="acted"', e)]
    assert not [e for e in entries if matches('jsonPayload.event="decision"', e)]
    with pytest.raises(Unsupported):
        matches('jsonPayload.event="alert" OR jsonPayload.event="canary"', entries[0])


def test_dashboard_charts_only_declared_metrics_and_labels() -> None:
    dashboard = json.loads((TELEMETRY / "dashboard.json").read_text())
    declared = {
        f"logging.googleapis.com/user/{m['name']}": {label["key"] for label in m["metricDescriptor"]["labels"]}
        for m in metrics().values()
    }
    charted = set()
    for tile in dashboard["mosaicLayout"]["tiles"]:
        for data_set in tile["widget"]["xyChart"]["dataSets"]:
            spec = data_set["timeSeriesQuery"]["timeSeriesFilter"]
            metric_type = spec["filter"].split('metric.type="', 1)[1].split('"', 1)[0]
            assert metric_type in declared, metric_type
            charted.add(metric_type)
            for field in spec["aggregation"].get("groupByFields", []):
                assert field.removeprefix("metric.label.") in declared[metric_type], field
    assert charted == set(declared)
