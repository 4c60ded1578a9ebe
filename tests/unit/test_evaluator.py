"""The alert-policy evaluator: documented alerting semantics as table cases, and a property."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.adapters.policy_files import load_policies
from controller.app.alertpolicies import generate
from controller.core.alert import alert_from_incident
from controller.core.evaluator import (
    MinuteFeed,
    PolicyEvaluator,
    UnsupportedPolicy,
    evaluate_feed,
    group_key,
    parse_policy,
    ratio,
)
from controller.core.incident import parse_notification
from controller.core.stats import ExponentialBuckets, Histogram

ROOT = Path(__file__).resolve().parent.parent.parent
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
REV = group_key(
    {
        "resource.label.service_name": "checkout",
        "resource.label.revision_name": "checkout-00042",
        "resource.label.location": "us-central1",
    }
)


def policy(
    *,
    duration: str = "120s",
    threshold: float = 0.05,
    missing: str | None = None,
    auto_close: str = "1800s",
    ratio_condition: bool = False,
    period: str = "60s",
    trigger: dict[str, Any] | None = None,
) -> dict[str, Any]:
    agg = {
        "alignmentPeriod": period,
        "perSeriesAligner": "ALIGN_DELTA",
        "crossSeriesReducer": "REDUCE_SUM",
        "groupByFields": ["resource.label.service_name", "resource.label.revision_name", "resource.label.location"],
    }
    ct: dict[str, Any] = {
        "filter": 'metric.type = "run.googleapis.com/request_count" AND resource.type = "cloud_run_revision"',
        "aggregations": [agg],
        "comparison": "COMPARISON_GT",
        "thresholdValue": threshold,
        "duration": duration,
    }
    if trigger is not None:
        ct["trigger"] = trigger
    if ratio_condition:
        ct["filter"] += ' AND metric.label.response_code_class = "5xx"'
        ct["denominatorFilter"] = 'metric.type = "run.googleapis.com/request_count"'
        ct["denominatorAggregations"] = [agg]
    cond: dict[str, Any] = {"name": "c0", "displayName": "5xx ratio", "conditionThreshold": ct}
    if missing:
        cond["conditionThreshold"]["evaluationMissingData"] = missing
    return {
        "displayName": "rollback: default / 5xx",
        "userLabels": {"rollback_trigger": "error_rate", "rollback_policy": "default"},
        "conditions": [cond],
        "combiner": "OR",
        "alertStrategy": {"autoClose": auto_close},
    }


def run(body: dict[str, Any], values: list[float | None]) -> list[tuple[int, str]]:
    """Evaluate one group's value per minute; returns (minute index, open|closed) per event."""
    ev = PolicyEvaluator(body, project="demo-proj")
    out: list[tuple[int, str]] = []
    for i, v in enumerate(values):
        for e in ev.evaluate(T0 + i * MIN, {"c0": {REV: v}}):
            out.append((i, e.state))
    return out


N = None
CASES = [
    # (name, policy kwargs, values per minute, expected events)
    ("opens after the duration", {}, [0.1, 0.1, 0.1], [(2, "open")]),
    ("duration 0 opens at once", {"duration": "0s"}, [0.01, 0.1], [(1, "open")]),
    ("duration resets on a good point", {}, [0.1, 0.1, 0.01, 0.1, 0.1, 0.1], [(5, "open")]),
    ("closes at the first good point", {}, [0.1, 0.1, 0.1, 0.2, 0.01], [(2, "open"), (4, "closed")]),
    ("equal to the threshold is not above", {"duration": "0s"}, [0.05, 0.05], []),
    ("NO_OP: missing data neither resets nor closes", {}, [0.1, N, 0.1, 0.1, N, N], [(2, "open")]),
    ("INACTIVE: missing data resets", {"missing": "EVALUATION_MISSING_DATA_INACTIVE"}, [0.1, 0.1, N, 0.1], []),
    (
        "INACTIVE: missing data closes",
        {"missing": "EVALUATION_MISSING_DATA_INACTIVE"},
        [0.1, 0.1, 0.1, N],
        [(2, "open"), (3, "closed")],
    ),
    ("NO_OP: the retest window does not elapse without data", {}, [0.1, N, N, N, N], []),
    ("ACTIVE: missing data counts as met", {"missing": "EVALUATION_MISSING_DATA_ACTIVE"}, [0.1, N, N], [(2, "open")]),
    ("autoClose: silent for 30 min closes", {}, [0.1, 0.1, 0.1, *([N] * 31)], [(2, "open"), (32, "closed")]),
    ("never crosses: never opens", {"duration": "0s"}, [0.0, 0.04, 0.049, N, 0.01], []),
]


@pytest.mark.parametrize(("name", "kwargs", "values", "expected"), CASES, ids=[c[0] for c in CASES])
def test_documented_semantics(name: str, kwargs: dict[str, Any], values: list[float | None], expected: Any) -> None:
    assert run(policy(**kwargs), values) == expected


def test_ratio_with_zero_denominator_is_no_data_and_no_numerator_is_zero() -> None:
    assert ratio(3, 0) is None
    assert ratio(3, None) is None
    assert ratio(None, 100) == 0.0
    assert ratio(18, 100) == pytest.approx(0.18)
    body = policy(ratio_condition=True, duration="0s", missing="EVALUATION_MISSING_DATA_INACTIVE")
    ev = PolicyEvaluator(body, project="demo-proj")
    feed = MinuteFeed(keep=timedelta(minutes=1))
    feed.add("c0", "num", REV, T0, 30.0)
    feed.add("c0", "den", REV, T0, 100.0)
    assert [e.state for e in evaluate_feed(ev, feed, T0)] == ["open"]
    # A minute with 5xx but no denominator (impossible in Cloud Run, possible in a filter) is no data.
    feed.add("c0", "num", REV, T0 + MIN, 5.0)
    assert [e.state for e in evaluate_feed(ev, feed, T0 + MIN)] == ["closed"]
    assert ev.incidents[0].closed_by == "missing-data"


def test_sliding_look_back_sums_the_minutes_inside_the_alignment_period() -> None:
    body = policy(ratio_condition=True, duration="0s", period="180s")
    ev = PolicyEvaluator(body, project="demo-proj")
    feed = MinuteFeed(keep=timedelta(minutes=3))

    def minute(i: int, num: int, den: int) -> list[str]:
        feed.add("c0", "num", REV, T0 + i * MIN, float(num))
        feed.add("c0", "den", REV, T0 + i * MIN, float(den))
        return [e.state for e in evaluate_feed(ev, feed, T0 + i * MIN)]

    # One bad minute of 10 requests would cross a 60 s period; inside 3 minutes with 1000-request
    # good ones it does not, until the good minutes slide out of the look-back.
    assert minute(0, 0, 1000) == []
    assert minute(1, 0, 1000) == []
    assert minute(2, 6, 10) == []  # 6 / 2010
    assert minute(3, 6, 10) == []  # 12 / 1020 (minute 0 has left the window)
    assert minute(4, 6, 10) == ["open"]  # 18 / 30


def test_percentile_reducer_reads_the_merged_distribution() -> None:
    options = ExponentialBuckets(num_finite_buckets=100, growth_factor=1.4, scale=1.0)
    body = policy(duration="0s", threshold=2000)
    body["conditions"][0]["conditionThreshold"]["aggregations"][0]["crossSeriesReducer"] = "REDUCE_PERCENTILE_95"
    ev = PolicyEvaluator(body, project="demo-proj")
    feed = MinuteFeed(keep=timedelta(minutes=1))
    feed.add("c0", "num", REV, T0, Histogram.from_samples(options, [100.0] * 90 + [3000.0] * 10))
    events = evaluate_feed(ev, feed, T0)
    assert [e.state for e in events] == ["open"]
    assert events[0].incident.opened_value is not None and events[0].incident.opened_value > 2000


def test_trigger_count_needs_that_many_groups_at_once() -> None:
    other = group_key({"resource.label.revision_name": "checkout-00041"})
    ev = PolicyEvaluator(policy(duration="0s", trigger={"count": 2}), project="demo-proj")
    assert ev.evaluate(T0, {"c0": {REV: 0.1, other: 0.01}}) == []
    assert len(ev.evaluate(T0 + MIN, {"c0": {REV: 0.1, other: 0.2}})) == 2


def test_notification_is_schema_1_2_and_the_controller_reads_it() -> None:
    ev = PolicyEvaluator(policy(duration="0s"), project="demo-proj", project_number=123)
    (opened,) = ev.evaluate(T0, {"c0": {REV: 0.183}})
    doc = parse_notification(json.dumps(opened.notification))
    alert = alert_from_incident(doc)
    assert doc.version == "1.2" and doc.incident.ended_at is None
    assert (alert.service, alert.revision, alert.region, alert.project) == (
        "checkout",
        "checkout-00042",
        "us-central1",
        "demo-proj",
    )
    assert alert.trigger == "error_rate" and alert.observed_value == pytest.approx(0.183)
    assert alert.window == timedelta(minutes=2) or alert.window == timedelta(0)
    (closed,) = ev.evaluate(T0 + MIN, {"c0": {REV: 0.0}})
    again = alert_from_incident(parse_notification(json.dumps(closed.notification)))
    assert again.state == "closed" and again.incident_id == alert.incident_id


def test_generated_policies_are_all_evaluable() -> None:
    bodies = [g.body for g in generate(load_policies(ROOT / "policies"))]
    assert bodies
    for body in bodies:
        spec = parse_policy(body)
        assert spec.auto_close == timedelta(minutes=30)
        assert all(c.aggregation.group_by for c in spec.conditions)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.update(combiner="AND"),
        lambda b: b["conditions"][0].pop("conditionThreshold"),
        lambda b: b["conditions"][0]["conditionThreshold"].update(comparison="BIGGER"),
        lambda b: b["conditions"][0]["conditionThreshold"]["aggregations"][0].update(perSeriesAligner="ALIGN_MEAN"),
        lambda b: b["conditions"][0]["conditionThreshold"].update(duration="5m"),
    ],
)
def test_unsupported_constructs_are_refused_by_name(mutate: Any) -> None:
    body = policy()
    mutate(body)
    with pytest.raises(UnsupportedPolicy):
        parse_policy(body)


def test_evaluations_must_move_forward() -> None:
    ev = PolicyEvaluator(policy(), project="p")
    ev.evaluate(T0, {})
    with pytest.raises(ValueError, match="forward"):
        ev.evaluate(T0, {})


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.floats(min_value=0.0, max_value=0.05)), max_size=60),
    duration=st.sampled_from(["0s", "60s", "120s", "300s"]),
    missing=st.sampled_from(
        [
            None,
            "EVALUATION_MISSING_DATA_INACTIVE",
            "EVALUATION_MISSING_DATA_NO_OP",
            "EVALUATION_MISSING_DATA_UNSPECIFIED",
        ]
    ),
)
def test_never_opens_for_a_series_that_never_crosses(
    values: list[float | None], duration: str, missing: str | None
) -> None:
    assert run(policy(duration=duration, missing=missing), values) == []


def test_the_evaluator_is_pure() -> None:
    code = (
        "import json, sys\nbase = set(sys.modules)\nimport controller.evaluator\n"
        "print(json.dumps(sorted(set(sys.modules) - base)))"
    )
    loaded = json.loads(
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    )
    assert [
        m for m in loaded if m.startswith(("google", "grpc", "requests", "urllib3", "http.client", "slack_sdk"))
    ] == []
    source = (ROOT / "controller" / "core" / "evaluator.py").read_text()
    assert "datetime.now" not in source and "time.time" not in source


def test_the_feed_keeps_only_the_look_back() -> None:
    feed = MinuteFeed(keep=timedelta(minutes=3))
    ev = PolicyEvaluator(policy(ratio_condition=True, period="180s"), project="p")
    for i in range(60):
        feed.add("c0", "num", REV, T0 + i * MIN, 1.0)
        feed.add("c0", "den", REV, T0 + i * MIN, 100.0)
        evaluate_feed(ev, feed, T0 + i * MIN)
        held = sum(
            len(feed.window("c0", side, T0 + i * MIN, timedelta(days=1)).get(REV, [])) for side in ("num", "den")
        )
        assert held <= 2 * 3


@settings(max_examples=100, deadline=None)
@given(
    minutes=st.lists(
        st.one_of(st.none(), st.tuples(st.integers(0, 5000), st.floats(0.0, 0.05))),
        max_size=40,
    ),
    period=st.sampled_from(["60s", "120s", "300s"]),
    duration=st.sampled_from(["0s", "120s"]),
)
def test_ratio_path_never_opens_when_no_minute_crosses(
    minutes: list[tuple[int, float] | None], period: str, duration: str
) -> None:
    # Every minute's 5xx share is at most the threshold, so every look-back's (a mediant of them) is too.
    ev = PolicyEvaluator(policy(ratio_condition=True, period=period, duration=duration), project="p")
    feed = MinuteFeed(keep=timedelta(minutes=5))
    for i, minute in enumerate(minutes):
        if minute is not None:
            requests, share = minute
            feed.add("c0", "den", REV, T0 + i * MIN, float(requests))
            feed.add("c0", "num", REV, T0 + i * MIN, float(int(requests * share)))
        assert evaluate_feed(ev, feed, T0 + i * MIN) == []
