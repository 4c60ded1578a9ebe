"""controller.core.alert.alert_from_incident: which service, revision, trigger and numbers an incident names."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.alert import LABEL_ROLLBACK_POLICY, LABEL_TRIGGER, Alert, alert_from_incident
from controller.core.incident import Notification, parse_notification

DATA = Path(__file__).resolve().parent.parent / "data"
OPEN_5XX: dict[str, Any] = json.loads((DATA / "incident-5xx-open.json").read_text("utf-8"))


def golden(name: str) -> Alert:
    return alert_from_incident(parse_notification((DATA / name).read_bytes()))


def alert_for(version: str = "1.2", **changes: Any) -> Alert:
    """Alert of the 5xx-open sample with incident fields replaced (... deletes a field)."""
    document = copy.deepcopy(OPEN_5XX)
    document["version"] = version
    for key, value in changes.items():
        if value is ...:
            del document["incident"][key]
        else:
            document["incident"][key] = value
    return alert_from_incident(Notification.model_validate(document))


# --------------------------------------------------------------------------- golden files


def test_5xx_open_alert_in_full() -> None:
    assert golden("incident-5xx-open.json") == Alert(
        incident_id="0.nk3l9v2x1abc",
        state="open",
        is_test=False,
        project="demo-proj",
        region="us-central1",
        service="checkout",
        revision="checkout-00042-xyz",
        trigger="error_rate",
        metric_type="run.googleapis.com/request_count",
        observed_value=0.183,
        threshold_value=0.05,
        window=timedelta(minutes=5),
        alert_policy="checkout: 5xx ratio > 5% per revision",
        condition_name="5xx ratio > 5% (5m)",
        user_labels={"rollback": "auto", "team": "payments"},
        url="https://console.cloud.google.com/monitoring/alerting/incidents/0.nk3l9v2x1abc?project=demo-proj",
        summary=OPEN_5XX["incident"]["summary"],
        started_at=datetime(2024, 6, 1, 12, 6, tzinfo=UTC),
        ended_at=None,
    )


GOLDEN = [
    pytest.param(
        "incident-5xx-closed.json",
        ("closed", False, "checkout-00042-xyz", "error_rate", 0.004, 0.05),
        id="5xx-closed",
    ),
    pytest.param(
        "incident-p95-open.json",
        ("open", False, "checkout-00042-xyz", "latency_p95", 1834.2, 1000.0),
        id="p95-open",
    ),
    pytest.param(
        "incident-console-test.json",
        ("open", True, None, None, 1.0, 0.5),
        id="console-test",
    ),
]


@pytest.mark.parametrize(("name", "expected"), GOLDEN)
def test_golden_alerts(name: str, expected: tuple[Any, ...]) -> None:
    alert = golden(name)

    assert (
        alert.state,
        alert.is_test,
        alert.revision,
        alert.trigger,
        alert.observed_value,
        alert.threshold_value,
    ) == expected


def test_closed_alert_carries_end_time() -> None:
    alert = golden("incident-5xx-closed.json")

    assert alert.ended_at == datetime(2024, 6, 1, 12, 21, tzinfo=UTC)
    assert alert.started_at == datetime(2024, 6, 1, 12, 6, tzinfo=UTC)


def test_console_test_notification() -> None:
    alert = golden("incident-console-test.json")

    assert alert.is_test is True
    assert alert.service is None
    assert alert.project == "12345"  # scoping_project_id: the resource has no project_id
    assert alert.alert_policy == "projects/12345/alertPolicies/12345"
    assert alert.metric_type == "test.googleapis.com/metric"


def test_test_resource_type_alone_marks_a_test() -> None:
    alert = alert_for(resource={"type": "example_resource", "labels": {}})

    assert alert.is_test is True


# --------------------------------------------------------------------------- triggers

PROBE_METRIC = "run.googleapis.com/container/completed_probe_attempt_count"
UPTIME_METRIC = "monitoring.googleapis.com/uptime_check/check_passed"


@pytest.mark.parametrize(
    ("metric_type", "labels", "expected"),
    [
        pytest.param("run.googleapis.com/request_count", {}, "error_rate", id="request-count"),
        pytest.param("run.googleapis.com/request_latencies", {}, "latency_p95", id="latencies"),
        pytest.param(PROBE_METRIC, {}, "health", id="probe-attempts"),
        pytest.param("run.googleapis.com/container/completed_probe_count", {}, "health", id="probes"),
        pytest.param(UPTIME_METRIC, {}, "health", id="uptime"),
        pytest.param("run.googleapis.com/container/cpu/utilizations", {}, None, id="unmapped"),
        pytest.param(
            "run.googleapis.com/container/cpu/utilizations",
            {LABEL_TRIGGER: "health"},
            "health",
            id="label-on-unmapped",
        ),
        pytest.param(
            "run.googleapis.com/request_count",
            {LABEL_TRIGGER: "latency_p95"},
            "latency_p95",
            id="label-overrides-metric",
        ),
        pytest.param(
            "run.googleapis.com/request_count",
            {LABEL_TRIGGER: "bogus"},
            "error_rate",
            id="invalid-label-ignored",
        ),
        pytest.param(
            "run.googleapis.com/request_count",
            {LABEL_TRIGGER: ""},
            "error_rate",
            id="empty-label-ignored",
        ),
    ],
)
def test_trigger(metric_type: str, labels: dict[str, str], expected: str | None) -> None:
    alert = alert_for(
        metric={"type": metric_type, "displayName": "m", "labels": {}},
        policy_user_labels=labels,
    )

    assert alert.trigger == expected
    assert alert.metric_type == metric_type


def test_trigger_label_on_the_resource_metadata_counts_too() -> None:
    alert = alert_for(metadata={"system_labels": {}, "user_labels": {LABEL_TRIGGER: "health"}})

    assert alert.trigger == "health"


@pytest.mark.parametrize(
    ("condition", "expected_type", "expected_trigger"),
    [
        pytest.param(
            {"conditionThreshold": {"filter": 'metric.type="run.googleapis.com/request_latencies"'}},
            "run.googleapis.com/request_latencies",
            "latency_p95",
            id="threshold-filter",
        ),
        pytest.param(
            {
                "conditionThreshold": {
                    "filter": "resource.type = 'cloud_run_revision' AND metric.type = "
                    f"'{PROBE_METRIC}' AND metric.labels.is_healthy = false"
                }
            },
            PROBE_METRIC,
            "health",
            id="single-quotes-and-spaces",
        ),
        pytest.param(
            {
                "conditionThreshold": {
                    "filter": f'metric.type="custom.googleapis.com/x" OR metric.type="{UPTIME_METRIC}"'
                }
            },
            UPTIME_METRIC,
            "health",
            id="prefers-a-mapped-type",
        ),
        pytest.param(
            {"conditionAbsent": {"filter": 'metric.type="run.googleapis.com/request_count"'}},
            "run.googleapis.com/request_count",
            "error_rate",
            id="absence-filter",
        ),
        pytest.param(
            {"conditionThreshold": {"filter": 'metric.type="custom.googleapis.com/x"'}},
            "custom.googleapis.com/x",
            None,
            id="unmapped-filter",
        ),
        pytest.param(
            {"conditionMonitoringQueryLanguage": {"query": "fetch cloud_run_revision"}},
            "",
            None,
            id="mql-needs-label",
        ),
    ],
)
def test_metric_type_from_condition_filter_when_metric_missing(
    condition: dict[str, Any], expected_type: str, expected_trigger: str | None
) -> None:
    alert = alert_for(metric=..., condition=condition)

    assert alert.metric_type == expected_type
    assert alert.trigger == expected_trigger


# --------------------------------------------------------------------------- identification


def test_uptime_check_alert_names_the_service_by_user_labels() -> None:
    alert = alert_for(
        resource={"type": "uptime_url", "labels": {"project_id": "demo-proj", "host": "x.run.app"}},
        metric={"type": UPTIME_METRIC, "labels": {"check_id": "checkout-uptime"}},
        policy_user_labels={"service_name": "checkout", "region": "europe-west1"},
    )

    assert (alert.project, alert.region, alert.service, alert.revision, alert.trigger) == (
        "demo-proj",
        "europe-west1",
        "checkout",
        None,
        "health",
    )


def test_probe_alert_grouped_by_revision() -> None:
    alert = alert_for(
        metric={"type": PROBE_METRIC, "labels": {"probe_type": "STARTUP", "is_healthy": "false"}},
        observed_value="3",
        threshold_value="2",
    )

    assert alert.trigger == "health"
    assert alert.revision == "checkout-00042-xyz"
    assert (alert.observed_value, alert.threshold_value) == (3.0, 2.0)


def test_service_level_alert_without_revision_label() -> None:
    # Policy grouped by service_name and location only: the revision is for the engine to find.
    labels = {"project_id": "demo-proj", "service_name": "checkout", "location": "us-central1"}
    alert = alert_for(resource={"type": "cloud_run_revision", "labels": labels})

    assert (alert.service, alert.region, alert.revision) == ("checkout", "us-central1", None)


def test_project_only_resource_falls_back_to_labels() -> None:
    # REDUCE_* without groupByFields leaves only project_id on the resource.
    alert = alert_for(
        resource={"type": "cloud_run_revision", "labels": {"project_id": "demo-proj"}},
        metric={"type": "run.googleapis.com/request_count", "labels": {"service_name": "cart"}},
        metadata={"user_labels": {"service": "ignored", "revision": "cart-00007-abc"}},
        policy_user_labels={"location": "asia-east1", "service": "also-ignored"},
    )

    assert (alert.project, alert.region, alert.service, alert.revision) == (
        "demo-proj",
        "asia-east1",
        "cart",  # metric label beats user labels
        "cart-00007-abc",
    )


@pytest.mark.parametrize(
    ("metadata_labels", "policy_labels", "expected_service"),
    [
        pytest.param({"service_name": "a"}, {}, "a", id="resource-user-label"),
        pytest.param({"service_name": "a"}, {"service_name": "b"}, "b", id="policy-wins"),
        pytest.param({}, {"service": "c"}, "c", id="short-key"),
        pytest.param({"service": "d"}, {"service_name": "e"}, "e", id="service_name-first"),
        pytest.param({}, {"service_name": ""}, None, id="empty-is-absent"),
    ],
)
def test_service_from_user_labels(
    metadata_labels: dict[str, str], policy_labels: dict[str, str], expected_service: str | None
) -> None:
    alert = alert_for(
        resource={"type": "cloud_run_revision", "labels": {}},
        metadata={"system_labels": {}, "user_labels": metadata_labels},
        policy_user_labels=policy_labels,
    )

    assert alert.service == expected_service


def test_user_labels_merge_policy_over_resource_labels() -> None:
    alert = alert_for(
        metadata={"user_labels": {"team": "resource-team", "env": "prod"}},
        policy_user_labels={"team": "payments", LABEL_ROLLBACK_POLICY: "strict"},
    )

    assert alert.user_labels == {"team": "payments", "env": "prod", LABEL_ROLLBACK_POLICY: "strict"}
    assert alert.rollback_policy == "strict"


def test_project_falls_back_to_scoping_project_then_none() -> None:
    no_project = {"type": "cloud_run_revision", "labels": {"service_name": "checkout"}}

    assert alert_for(resource=no_project).project == "demo-proj"
    assert alert_for(resource=no_project, scoping_project_id=...).project is None


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("observed", "threshold", "expected"),
    [
        pytest.param("0.183", "0.05", (0.183, 0.05), id="strings"),
        pytest.param("", "", (None, 0.05), id="empty-threshold-from-condition"),
        pytest.param("n/a", "NaN", (None, 0.05), id="not-numbers"),
        pytest.param("inf", "1e3", (None, 1000.0), id="infinite-observed"),
        pytest.param(..., ..., (None, 0.05), id="absent-1.1"),
    ],
)
def test_observed_and_threshold_values(
    observed: Any, threshold: Any, expected: tuple[float | None, float | None]
) -> None:
    alert = alert_for(observed_value=observed, threshold_value=threshold)

    assert (alert.observed_value, alert.threshold_value) == expected


def test_window_and_condition_name_fallbacks() -> None:
    alert = alert_for(
        condition={"displayName": "from condition", "conditionAbsent": {"duration": "120s"}},
        condition_name=...,
    )

    assert alert.window == timedelta(minutes=2)
    assert alert.condition_name == "from condition"


def test_no_condition_means_no_window_and_no_threshold() -> None:
    alert = alert_for(condition=..., threshold_value=...)

    assert (alert.window, alert.threshold_value) == (None, None)


# --------------------------------------------------------------------------- properties

LABEL_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", max_size=12)
LABEL_MAPS = st.dictionaries(
    st.sampled_from(
        [
            "project_id",
            "location",
            "region",
            "service_name",
            "service",
            "revision_name",
            "revision",
            LABEL_TRIGGER,
            "other",
        ]
    ),
    LABEL_TEXT,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(resource=LABEL_MAPS, metric=LABEL_MAPS, metadata=LABEL_MAPS, policy=LABEL_MAPS)
def test_identification_precedence_holds_for_any_labels(
    resource: dict[str, str],
    metric: dict[str, str],
    metadata: dict[str, str],
    policy: dict[str, str],
) -> None:
    alert = alert_for(
        resource={"type": "cloud_run_revision", "labels": resource},
        metric={"type": "run.googleapis.com/request_count", "labels": metric},
        metadata={"user_labels": metadata},
        policy_user_labels=policy,
    )
    merged = {**metadata, **policy}

    expected_service = (
        resource.get("service_name")
        or metric.get("service_name")
        or merged.get("service_name")
        or merged.get("service")
        or None
    )
    assert alert.service == expected_service
    if resource.get("revision_name"):
        assert alert.revision == resource["revision_name"]
    assert alert.user_labels == merged
    assert alert.trigger in {"error_rate", "latency_p95", "health"}
