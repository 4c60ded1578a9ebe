"""``controller.alertpolicies``: AlertPolicy JSON from rollback policies, and the incidents it yields.

Three promises are checked: the JSON is an ``AlertPolicy`` the API accepts (parsed strictly by
the library's own proto types, and round-tripped); its thresholds, filters and labels are the
policy's; and an incident Monitoring would open from it maps back, through ``alert_from_incident``
and policy selection, to the right service, revision, region, trigger and policy.
"""

from __future__ import annotations

import argparse
import io
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from google.cloud import monitoring_v3

from controller.adapters.policy_files import load_policies, load_policy_paths
from controller.core.alert import METRIC_TRIGGERS, alert_from_incident
from controller.core.alertpolicies import (
    CHANNEL_PLACEHOLDER,
    MAX_CONDITIONS,
    AlertPolicyError,
    GeneratedAlertPolicy,
    generate,
    health_window,
)
from controller.core.incident import parse_notification
from controller.core.policy import Policy
from controller.core.policy_matching import PolicySet
from controller.surfaces.cli_alert_policies import add_command

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "policies" / "default.yaml"
EXAMPLES = ROOT / "policies" / "examples"
DEPLOY = ROOT / "deploy" / "alert-policies"
CHANNEL = "projects/demo-proj/notificationChannels/1234567890"
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")

REQUEST_COUNT = '"run.googleapis.com/request_count"'
RUN = 'resource.type = "cloud_run_revision"'


def policy(**fields: Any) -> Policy:
    """A policy from YAML-shaped data (aliases such as ``for``), as the loader validates it."""
    return Policy.model_validate({"name": "p", **fields}, by_alias=True, by_name=False)


def by_file(generated: list[GeneratedAlertPolicy]) -> dict[str, GeneratedAlertPolicy]:
    return {g.filename: g for g in generated}


def threshold(g: GeneratedAlertPolicy, index: int = 0) -> dict[str, Any]:
    condition: dict[str, Any] = g.body["conditions"][index]["conditionThreshold"]
    return condition


def all_sets() -> list[tuple[str, PolicySet]]:
    sets = [("default", load_policies(DEFAULT)), ("default+examples", load_policy_paths([DEFAULT, EXAMPLES]))]
    sets += [(path.name, load_policies(path)) for path in sorted(EXAMPLES.glob("*.yaml"))]
    return sets


# --------------------------------------------------------------------------------------------
# The API accepts it
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "policies"), all_sets(), ids=[n for n, _ in all_sets()])
def test_every_generated_policy_parses_strictly_and_round_trips(name: str, policies: PolicySet) -> None:
    generated = generate(policies, channels=[CHANNEL])
    assert generated
    for item in generated:
        text = item.to_json()
        parsed = monitoring_v3.AlertPolicy.from_json(text, ignore_unknown_fields=False)
        again = monitoring_v3.AlertPolicy.to_json(
            parsed, use_integers_for_enums=False, including_default_value_fields=False
        )
        assert json.loads(again) == item.body, item.filename
        assert monitoring_v3.AlertPolicy.from_json(again, ignore_unknown_fields=False) == parsed
        assert 1 <= len(parsed.conditions) <= MAX_CONDITIONS


@pytest.mark.parametrize(("name", "policies"), all_sets(), ids=[n for n, _ in all_sets()])
def test_user_labels_are_valid_gcp_labels(name: str, policies: PolicySet) -> None:
    for item in generate(policies):
        labels = item.body["userLabels"]
        assert labels["rollback_trigger"] == item.trigger
        assert labels["managed_by"] == "rollback-controller"
        for key, value in labels.items():
            assert LABEL_KEY.match(key), key
            assert LABEL_VALUE.match(value), value


def test_every_metric_type_generated_maps_to_its_trigger_without_the_label() -> None:
    # Belt and braces: even an alert policy whose rollback_trigger label was edited away maps right.
    for item in generate(load_policies(DEFAULT)):
        metric = re.search(r'metric\.type = "([^"]+)"', threshold(item)["filter"])
        assert metric is not None
        assert METRIC_TRIGGERS[metric.group(1)] == item.trigger


# --------------------------------------------------------------------------------------------
# The default policy, exactly
# --------------------------------------------------------------------------------------------

AGG_60S = {
    "alignmentPeriod": "60s",
    "perSeriesAligner": "ALIGN_DELTA",
    "crossSeriesReducer": "REDUCE_SUM",
    # Literal on purpose: these are the resource labels alert_from_incident reads.
    "groupByFields": [
        "resource.label.service_name",
        "resource.label.revision_name",
        "resource.label.location",
    ],
}


def test_default_policy_yields_three_alert_policies() -> None:
    generated = by_file(generate(load_policies(DEFAULT)))
    assert list(generated) == ["default.error_rate.json", "default.latency_p95.json", "default.health.json"]
    for item in generated.values():
        body = item.body
        assert body["userLabels"] == {
            "rollback_policy": "default",
            "rollback_trigger": item.trigger,
            "managed_by": "rollback-controller",
        }
        assert body["combiner"] == "OR"
        assert body["enabled"] is True
        assert len(body["conditions"]) == 1
        assert body["notificationChannels"] == [CHANNEL_PLACEHOLDER]
        assert body["alertStrategy"] == {"autoClose": "1800s"}
        assert body["documentation"]["mimeType"] == "text/markdown"
        assert "`default`" in body["documentation"]["content"]
        assert "docs/alert-policies.md" in body["documentation"]["content"]
        assert body["severity"] == "CRITICAL"
        assert threshold(item)["evaluationMissingData"] == "EVALUATION_MISSING_DATA_INACTIVE"
        assert threshold(item)["trigger"] == {"count": 1}
        assert threshold(item)["comparison"] == "COMPARISON_GT"


def test_default_error_rate_is_a_ratio_like_the_sample_incident() -> None:
    item = by_file(generate(load_policies(DEFAULT)))["default.error_rate.json"]
    assert item.body["displayName"] == "rollback: default / 5xx ratio > 5% for 2m"
    t = threshold(item)
    assert t["filter"] == (f'metric.type = {REQUEST_COUNT} AND {RUN} AND metric.label.response_code_class = "5xx"')
    assert t["denominatorFilter"] == f"metric.type = {REQUEST_COUNT} AND {RUN}"
    assert t["aggregations"] == [AGG_60S]
    assert t["denominatorAggregations"] == [AGG_60S]
    assert (t["thresholdValue"], t["duration"]) == (0.05, "120s")
    assert "min_requests: 50" in item.body["documentation"]["content"]


def test_default_latency_is_p95_of_merged_distributions() -> None:
    item = by_file(generate(load_policies(DEFAULT)))["default.latency_p95.json"]
    assert item.body["displayName"] == "rollback: default / p95 latency > 2000 ms for 2m"
    t = threshold(item)
    assert t["filter"] == f'metric.type = "run.googleapis.com/request_latencies" AND {RUN}'
    assert t["aggregations"] == [{**AGG_60S, "crossSeriesReducer": "REDUCE_PERCENTILE_95"}]
    assert "denominatorFilter" not in t
    assert (t["thresholdValue"], t["duration"]) == (2000, "120s")


def test_default_health_counts_failed_probe_attempts_in_a_window() -> None:
    item = by_file(generate(load_policies(DEFAULT)))["default.health.json"]
    assert item.body["displayName"] == "rollback: default / >= 3 failed health checks in 2m"
    t = threshold(item)
    assert t["filter"] == (
        f'metric.type = "run.googleapis.com/container/completed_probe_attempt_count" AND {RUN} '
        "AND metric.label.is_healthy = false"
    )
    assert t["aggregations"] == [{**AGG_60S, "alignmentPeriod": "120s"}]
    # 3 failures = more than 2 in the window; fire at once, the window already is the evidence.
    assert (t["thresholdValue"], t["duration"]) == (2, "0s")


@pytest.mark.parametrize(
    ("failures", "period", "window"),
    [
        (1, 10, 1),  # one failure: any one-minute sample
        (2, 10, 2),  # a pair 10 s apart may straddle a minute boundary
        (3, 10, 2),
        (7, 10, 2),  # 60 s span: still two samples at most
        (8, 10, 3),
        (3, 60, 3),
        (3, 240, 9),
    ],
)
def test_health_window_always_holds_the_whole_run(failures: int, period: int, window: int) -> None:
    assert health_window(failures, timedelta(seconds=period)) == timedelta(minutes=window)


def test_health_threshold_follows_consecutive_failures() -> None:
    (item,) = generate([policy(triggers={"health": {"consecutive_failures": 1}})])
    assert threshold(item)["thresholdValue"] == 0
    assert threshold(item)["aggregations"][0]["alignmentPeriod"] == "60s"


def test_durations_round_up_to_whole_minutes() -> None:
    (item,) = generate([policy(triggers={"error_rate": {"above": 0.025, "for": "90s"}})])
    assert threshold(item)["duration"] == "120s"
    assert item.body["displayName"] == "rollback: p / 5xx ratio > 2.5% for 2m"
    assert "`for: 90s` rounded up to 2m" in item.body["documentation"]["content"]


def test_channels_are_used_and_checked() -> None:
    (item,) = generate([policy(triggers={"health": {}})], channels=[CHANNEL, CHANNEL + "9"])
    assert item.body["notificationChannels"] == [CHANNEL, CHANNEL + "9"]
    with pytest.raises(AlertPolicyError, match="notificationChannels"):
        generate([policy(triggers={"health": {}})], channels=["my-channel"])


def test_non_enforcing_modes_are_warnings() -> None:
    for mode in ("dry-run", "notify"):
        (item,) = generate([policy(mode=mode, triggers={"health": {}})])
        assert item.body["severity"] == "WARNING"
        assert f"mode `{mode}`" in item.body["documentation"]["content"]


def test_canary_only_policies_yield_nothing() -> None:
    assert generate([policy(match={"services": ["web-*"]}, canary={})]) == []


# --------------------------------------------------------------------------------------------
# Match → filter
# --------------------------------------------------------------------------------------------


def scope_of(item: GeneratedAlertPolicy, index: int = 0) -> str:
    """The filter clauses between the resource type and the trigger's own clause."""
    t = threshold(item, index)
    filt = t.get("denominatorFilter", t["filter"])
    return str(filt.split(f"{RUN}", 1)[1]).removeprefix(" AND ")


@pytest.mark.parametrize(
    ("services", "scopes"),
    [
        (["checkout"], ['resource.label.service_name = "checkout"']),
        (["cart", "checkout"], ['resource.label.service_name = one_of("cart", "checkout")']),
        (["pay-*"], ['resource.label.service_name = starts_with("pay-")']),
        (["*"], [""]),
        (
            ["checkout", "pay-*", "web-*"],
            [
                'resource.label.service_name = "checkout"',
                'resource.label.service_name = starts_with("pay-")',
                'resource.label.service_name = starts_with("web-")',
            ],
        ),
    ],
    ids=["exact", "several", "prefix", "any", "mixed"],
)
def test_service_globs_become_filters(services: list[str], scopes: list[str]) -> None:
    (item,) = generate([policy(match={"services": services}, triggers={"error_rate": {"above": 0.05}})])
    assert [scope_of(item, i) for i in range(len(item.body["conditions"]))] == scopes
    assert item.notes == ()
    if len(scopes) > 1:
        names = [c["displayName"] for c in item.body["conditions"]]
        assert names == [f"5xx ratio > 5% for 2m [{i}/{len(scopes)}]" for i in range(1, len(scopes) + 1)]


def test_globs_that_are_not_prefixes_leave_the_service_unfiltered_and_say_so() -> None:
    (item,) = generate([policy(match={"services": ["api-?", "checkout"]}, triggers={"error_rate": {"above": 0.05}})])
    assert scope_of(item) == ""
    assert any("api-?" in n and "every service" in n for n in item.notes)
    assert "api-?" in item.body["documentation"]["content"]


def test_projects_and_regions_are_filtered_too() -> None:
    (item,) = generate(
        [
            policy(
                match={"services": ["checkout"], "projects": ["shop-prod"], "regions": ["europe-west1", "us-*"]},
                triggers={"latency_p95": {"above_ms": 900}},
            )
        ]
    )
    filters = [c["conditionThreshold"]["filter"] for c in item.body["conditions"]]
    base = (
        f'metric.type = "run.googleapis.com/request_latencies" AND {RUN} AND resource.label.service_name = "checkout" '
        'AND resource.label.project_id = "shop-prod" AND resource.label.location = '
    )
    assert filters == [base + '"europe-west1"', base + 'starts_with("us-")']


def test_too_many_combinations_widen_regions_first() -> None:
    (item,) = generate(
        [
            policy(
                match={"services": ["a", "b-*", "c-*"], "regions": ["eu", "us-*", "asia-*"]},
                triggers={"error_rate": {"above": 0.05}},
            )
        ]
    )
    assert len(item.body["conditions"]) == 3
    assert "location" not in threshold(item)["filter"]
    assert any("every region" in n for n in item.notes)


def test_quotes_in_names_are_escaped() -> None:
    # Policy globs are free text; a filter must never be broken (or extended) by one.
    (item,) = generate([policy(match={"services": ['we"ird']}, triggers={"error_rate": {"above": 0.05}})])
    assert scope_of(item) == 'resource.label.service_name = "we\\"ird"'


# --------------------------------------------------------------------------------------------
# Several policies: each alert speaks for the policy the controller would choose
# --------------------------------------------------------------------------------------------


def test_examples_with_default() -> None:
    generated = by_file(generate(load_policy_paths([DEFAULT, EXAMPLES])))
    default = generated["default.error_rate.json"]
    # recommendations-trial (dry-run) owns its service: the default's alert leaves it out...
    assert 'resource.label.service_name != "recommendations"' in threshold(default)["filter"]
    # ...but payments-prod (service + project) cannot be cut out of an AND-only filter, so the
    # default's alerts let the controller choose by specificity instead of naming "default".
    assert "rollback_policy" not in default.body["userLabels"]
    assert any("payments-prod" in n for n in default.notes)

    payments = generated["payments-prod.error_rate.json"]
    assert payments.body["userLabels"]["rollback_policy"] == "payments-prod"
    assert [scope_of(payments, i) for i in range(2)] == [
        'resource.label.service_name = "checkout" AND resource.label.project_id = "shop-prod"',
        'resource.label.service_name = starts_with("payments-") AND resource.label.project_id = "shop-prod"',
    ]
    assert (threshold(payments)["thresholdValue"], threshold(payments)["duration"]) == (0.02, "60s")
    assert threshold(generated["payments-prod.health.json"])["thresholdValue"] == 1

    trial = generated["recommendations-trial.latency_p95.json"]
    assert scope_of(trial) == 'resource.label.service_name = "recommendations"'
    assert (threshold(trial)["thresholdValue"], threshold(trial)["duration"]) == (3000, "300s")
    assert trial.body["severity"] == "WARNING"

    critical = generated["tier-critical.error_rate.json"]
    assert critical.body["userLabels"] == {
        "tier": "critical",
        "rollback_policy": "tier-critical",
        "rollback_trigger": "error_rate",
        "managed_by": "rollback-controller",
    }
    assert "tier-critical.latency_p95.json" not in generated


def test_a_narrower_policy_that_loses_is_not_excluded() -> None:
    # "pay" exact in any project (2 points) loses to the broad policy's project match + glob (3).
    broad = policy(name="broad", match={"services": ["pay*"], "projects": ["prod"]}, triggers={"health": {}})
    narrow = policy(name="narrow", match={"services": ["pay"]}, triggers={"health": {}})
    items = by_file(generate([broad, narrow]))
    assert "!=" not in threshold(items["broad.health.json"])["filter"]
    assert items["broad.health.json"].body["userLabels"]["rollback_policy"] == "broad"


def test_bad_alert_labels_are_refused() -> None:
    with pytest.raises(AlertPolicyError, match="label value 'Payments'"):
        generate([policy(match={"alert_labels": {"team": "Payments"}}, triggers={"health": {}})])


def test_a_name_that_is_no_label_value_selects_by_match() -> None:
    (item,) = generate([policy(name="team.payments", triggers={"health": {}})])
    assert "rollback_policy" not in item.body["userLabels"]
    assert any("not a valid GCP label value" in n for n in item.notes)


# --------------------------------------------------------------------------------------------
# Round trip: the incident Monitoring would open → the controller's Alert and policy
# --------------------------------------------------------------------------------------------


def incident_from(
    item: GeneratedAlertPolicy,
    *,
    service: str,
    revision: str,
    region: str,
    project: str = "demo-proj",
    with_metric: bool = True,
) -> str:
    """The notification Monitoring sends for one series of this alert policy (schema 1.2)."""
    condition = item.body["conditions"][0]
    t = condition["conditionThreshold"]
    values = {"service_name": service, "revision_name": revision, "location": region}
    # Only group-by labels survive aggregation, plus project_id (wire doc 01, pitfall 4).
    labels = {f.rsplit(".", 1)[1]: values[f.rsplit(".", 1)[1]] for f in t["aggregations"][0]["groupByFields"]}
    metric_type = re.search(r'metric\.type = "([^"]+)"', t["filter"])
    assert metric_type is not None
    incident: dict[str, Any] = {
        "incident_id": "0.generated1",
        "scoping_project_id": project,
        "scoping_project_number": 123456789012,
        "url": "https://console.cloud.google.com/monitoring/alerting/incidents/0.generated1",
        "started_at": 1717243560,
        "ended_at": None,
        "state": "open",
        "summary": "generated",
        "observed_value": str(t["thresholdValue"] * 2 + 1),
        "threshold_value": str(t["thresholdValue"]),
        "resource": {"type": "cloud_run_revision", "labels": {"project_id": project, **labels}},
        "policy_name": item.body["displayName"],
        "policy_user_labels": item.body["userLabels"],
        "documentation": {"content": item.body["documentation"]["content"], "mime_type": "text/markdown"},
        "condition": {"name": "projects/demo-proj/alertPolicies/1/conditions/2", **condition},
        "condition_name": condition["displayName"],
    }
    if with_metric:
        incident["metric"] = {"type": metric_type.group(1), "displayName": "", "labels": {}}
    return json.dumps({"incident": incident, "version": "1.2"})


@pytest.mark.parametrize("with_metric", [True, False], ids=["with-metric", "filter-only"])
def test_incidents_map_back_to_service_revision_region_and_trigger(with_metric: bool) -> None:
    policies = load_policies(DEFAULT)
    for item in generate(policies):
        raw = incident_from(
            item, service="checkout", revision="checkout-00042-xyz", region="us-central1", with_metric=with_metric
        )
        alert = alert_from_incident(parse_notification(raw))
        assert (alert.project, alert.region, alert.service, alert.revision) == (
            "demo-proj",
            "us-central1",
            "checkout",
            "checkout-00042-xyz",
        )
        assert alert.trigger == item.trigger
        assert alert.rollback_policy == "default"
        assert alert.window == timedelta(seconds=int(threshold(item)["duration"].removesuffix("s")))
        assert alert.threshold_value == threshold(item)["thresholdValue"]
        selection = policies.select(alert)
        assert selection.policy is not None and selection.policy.name == "default", selection.reason


@pytest.mark.parametrize(
    ("file", "service", "project", "expected"),
    [
        ("default.error_rate.json", "cart", "demo-proj", "default"),
        ("default.error_rate.json", "checkout", "shop-prod", "payments-prod"),  # chosen by specificity
        ("default.latency_p95.json", "payments-api", "shop-prod", "payments-prod"),
        ("payments-prod.error_rate.json", "payments-api", "shop-prod", "payments-prod"),
        ("recommendations-trial.error_rate.json", "recommendations", "demo-proj", "recommendations-trial"),
        ("tier-critical.health.json", "search", "demo-proj", "tier-critical"),
        ("tier-batch.error_rate.json", "worker", "demo-proj", "tier-batch"),
    ],
)
def test_incidents_of_the_example_set_select_the_intended_policy(
    file: str, service: str, project: str, expected: str
) -> None:
    policies = load_policy_paths([DEFAULT, EXAMPLES])
    item = by_file(generate(policies))[file]
    raw = incident_from(item, service=service, revision=f"{service}-00002-abc", region="europe-west1", project=project)
    alert = alert_from_incident(parse_notification(raw))
    assert (alert.service, alert.revision, alert.project, alert.trigger) == (
        service,
        f"{service}-00002-abc",
        project,
        item.trigger,
    )
    selection = policies.select(alert)
    assert selection.policy is not None and selection.policy.name == expected, selection.reason
    # The chosen policy enforces the trigger that fired (guard 4 would otherwise drop the alert).
    assert getattr(selection.policy.triggers, item.trigger) is not None


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="python -m controller")
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["alert-policies", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = args.handler(args, out, err)
    return code, out.getvalue(), err.getvalue()


def test_cli_prints_a_json_array_and_warns_about_the_placeholder() -> None:
    code, out, err = run_cli(str(DEFAULT))
    assert code == 0
    bodies = json.loads(out)
    assert [b["displayName"] for b in bodies] == [g.body["displayName"] for g in generate(load_policies(DEFAULT))]
    assert CHANNEL_PLACEHOLDER in err


def test_cli_with_a_channel_is_quiet() -> None:
    code, out, err = run_cli(str(DEFAULT), "--channel", CHANNEL)
    assert (code, err) == (0, "")
    assert {c for b in json.loads(out) for c in b["notificationChannels"]} == {CHANNEL}


def test_cli_output_dir_writes_one_file_per_policy_and_trigger(tmp_path: Path) -> None:
    target = tmp_path / "out"
    code, out, _ = run_cli(str(DEFAULT), str(EXAMPLES), "--channel", CHANNEL, "--output-dir", str(target))
    assert code == 0
    names = sorted(p.name for p in target.iterdir())
    expected = sorted(g.filename for g in generate(load_policy_paths([DEFAULT, EXAMPLES])))
    assert names == expected and len(names) == 11
    assert sorted(out.splitlines()) == [str(target / n) for n in expected]
    for path in target.iterdir():
        monitoring_v3.AlertPolicy.from_json(path.read_text(encoding="utf-8"), ignore_unknown_fields=False)


def test_cli_invalid_policies_exit_1_with_the_problems() -> None:
    code, out, err = run_cli(str(ROOT / "tests/data/policies/invalid/typo-key.yaml"))
    assert code == 1
    assert "unknown key" in out
    assert "nothing generated" in err


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run_cli(str(tmp_path / "missing.yaml"))[0] == 2
    code, _, err = run_cli(str(DEFAULT), "--channel", "slack")
    assert code == 2 and "notificationChannels" in err


def test_cli_defaults_to_rollback_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLBACK_POLICIES", str(EXAMPLES / "new-service-dry-run.yaml"))
    code, out, _ = run_cli()
    assert code == 0
    assert [b["userLabels"]["rollback_policy"] for b in json.loads(out)] == ["recommendations-trial"] * 2


def test_importing_the_module_does_not_import_google_cloud() -> None:
    import subprocess
    import sys

    # A bare ``google.cloud`` namespace module may exist at startup (*-nspkg.pth); its children may not.
    code = (
        "import sys, controller.core.alertpolicies; "
        "sys.exit(any(m.startswith(('google.cloud.', 'google.api_core', 'grpc')) for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------------------------
# deploy/alert-policies never drifts from the generator
# --------------------------------------------------------------------------------------------


def test_deploy_examples_are_what_the_generator_produces_for_the_default_policy() -> None:
    generated = {g.filename: g.to_json() for g in generate(load_policies(DEFAULT))}
    shipped = {p.name: p.read_text(encoding="utf-8") for p in DEPLOY.glob("*.json")}
    assert shipped == generated, (
        "regenerate with: python -m controller alert-policies policies/default.yaml --output-dir deploy/alert-policies"
    )
    assert (DEPLOY / "README.md").is_file()
