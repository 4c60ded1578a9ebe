"""Policies: the shipped files, loading with file:line:col errors, specificity matching, JSON Schema.

Grouped by topic; tables carry readable ids so a failure names the case, not an index.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from controller.adapters.policy_files import (
    DEFAULT_POLICY_PATH,
    PolicyLoadError,
    load_policies,
    load_policy_paths,
    policy_json_schema,
    policy_path,
)
from controller.core.alert import Alert
from controller.core.durations import format_duration, parse_duration
from controller.core.errors import PolicyError
from controller.core.policy import Canary, Match, Policy
from controller.core.policy_matching import PolicySet, explain_match
from controller.surfaces.cli import schema_text

ROOT = Path(__file__).resolve().parents[2]


def validate_paths(paths: list[Path]) -> list[str]:
    """Every problem in these paths, as ``validate`` prints them (``PolicyLoadError.problems``)."""
    try:
        load_policy_paths(paths)
    except PolicyLoadError as exc:
        return list(exc.problems)
    return []


def score_match(match: Match, **where: Any) -> int | None:
    """The specificity score ``explain_match`` gives, or None when ``match`` does not accept it."""
    found = explain_match(match, **where)
    return None if found is None else found.score


DATA = ROOT / "tests" / "data" / "policies"
INVALID = DATA / "invalid"


def policy(name: str, match: Mapping[str, Any] | None = None, **extra: Any) -> Policy:
    """A valid policy with the given match block (one health trigger unless told otherwise)."""
    doc: dict[str, Any] = {"name": name, "triggers": {"health": {}}, **extra}
    if match is not None:
        doc["match"] = dict(match)
    return Policy.model_validate(doc)


# -- the shipped policies ------------------------------------------------------------------


def test_default_path_is_the_repository_policies_directory() -> None:
    assert DEFAULT_POLICY_PATH == ROOT / "policies"
    assert policy_path({}) == DEFAULT_POLICY_PATH
    assert policy_path({"ROLLBACK_POLICIES": " "}) == DEFAULT_POLICY_PATH
    assert policy_path({"ROLLBACK_POLICIES": "/etc/rollback"}) == Path("/etc/rollback")


def test_default_policy_holds_the_reference_thresholds() -> None:
    policies = load_policies(ROOT / "policies")
    # examples/ is a sub-directory: documentation, never live policy.
    assert policies.names == ["default"]
    p = policies["default"]
    assert p.mode == "enforce"
    assert p.match.services == ["*"] and not p.match.projects and not p.match.regions
    er, lat, health = p.triggers.error_rate, p.triggers.latency_p95, p.triggers.health
    assert er is not None and lat is not None and health is not None
    assert (er.above, er.for_, er.min_requests) == (0.05, timedelta(minutes=2), 50)
    assert (lat.above_ms, lat.for_, lat.min_requests) == (2000, timedelta(minutes=2), 50)
    assert health.consecutive_failures == 3
    assert (p.rollback.to, p.rollback.cooldown, p.rollback.max_per_day) == ("last-good", timedelta(minutes=15), 3)
    assert p.canary is not None
    assert p.canary.steps == [10, 25, 50, 100]
    assert (p.canary.step_for, p.canary.min_requests) == (timedelta(minutes=5), 100)
    assert (p.canary.max_error_rate_increase, p.canary.max_latency_ratio) == (0.01, 1.25)


def test_default_policy_applies_to_any_service_with_score_zero() -> None:
    selection = load_policies(ROOT / "policies").select_for("any-project", "any-region", "any-service")
    assert selection.policy is not None and selection.policy.name == "default"
    assert selection.score == 0
    assert selection.reason == "policy 'default' matched: it covers every service (the only matching policy)"


@pytest.mark.parametrize("path", sorted((ROOT / "policies" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_each_example_is_valid(path: Path) -> None:
    assert len(load_policies(path)) >= 1


def test_examples_deploy_beside_the_default_without_conflict() -> None:
    policies = load_policy_paths([ROOT / "policies", ROOT / "policies" / "examples"])
    assert len(policies) == 5
    chosen = policies.select_for("shop-prod", "europe-west1", "payments-api")
    assert chosen.policy is not None and chosen.policy.name == "payments-prod"
    assert chosen.candidates == ["payments-prod", "default"]


# -- loading valid files -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "names"),
    [
        ("multi-document.yaml", ["checkout", "payments"]),
        ("list-document.yaml", ["search", "search-eu"]),
        ("canary-only.yaml", ["frontend-canary"]),
    ],
    ids=["multi-document-stream", "list-document", "canary-only"],
)
def test_valid_file_loads(file: str, names: list[str]) -> None:
    policies = load_policies(DATA / "valid" / file)
    assert policies.names == names
    assert validate_paths([DATA / "valid" / file]) == []


def test_directory_loads_its_files_in_name_order_with_origins() -> None:
    policies = load_policies(DATA / "valid")
    assert policies.names == ["frontend-canary", "search", "search-eu", "checkout", "payments"]
    assert policies.origin("payments") == f"{DATA / 'valid' / 'multi-document.yaml'}:9:1"
    assert policies.origin("search-eu") == f"{DATA / 'valid' / 'list-document.yaml'}:5:3"


def test_loaded_values_are_typed() -> None:
    payments = load_policies(DATA / "valid" / "multi-document.yaml")["payments"]
    assert payments.triggers.latency_p95 is not None
    assert payments.triggers.latency_p95.for_ == timedelta(seconds=90)
    assert payments.triggers.error_rate is None


def test_yaml_speaks_for_never_the_python_name(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text("name: p\ntriggers:\n  error_rate: {above: 0.1, for_: 2m}\n")
    assert validate_paths([file]) == [f"{file}:3:28: triggers.error_rate.for_: unknown key 'for_'; did you mean 'for'?"]


def test_unsafe_yaml_tags_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "evil.yaml"
    file.write_text("name: !!python/object/apply:os.system ['true']\n")
    [line] = validate_paths([file])
    assert line.startswith(f"{file}:1:7: YAML syntax error: could not determine a constructor")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, "{dir}: no policy files (*.yaml, *.yml) here"),
        ({"empty.yaml": "# nothing\n---\n"}, "{dir}: no policies found"),
        ({"x.yaml": "name: x\ntriggers: {health: {}}\n", "sub/y.yaml": "not: [valid"}, None),
        ({".editor-lock.yaml": "garbage: [", "z.yml": "name: z\ntriggers: {health: {}}\n"}, None),
    ],
    ids=["empty-directory", "only-empty-documents", "subdirectories-ignored", "hidden-files-ignored-yml-read"],
)
def test_directory_edge_cases(tmp_path: Path, files: dict[str, str], expected: str | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    problems = validate_paths([tmp_path])
    assert problems == ([expected.format(dir=tmp_path)] if expected else [])


def test_missing_path_is_a_problem(tmp_path: Path) -> None:
    assert validate_paths([tmp_path / "nope.yaml"]) == [f"{tmp_path / 'nope.yaml'}: no such file or directory"]


# -- loading invalid files: every problem, with file:line:col --------------------------------

INVALID_CASES: list[tuple[str, list[str]]] = [
    (
        "typo-key.yaml",
        [
            "{f}:6:5: triggers.error_rate.min_request: unknown key 'min_request'; did you mean 'min_requests'?",
            "{f}:7:3: triggers.helth: unknown key 'helth'; did you mean 'health'?",
        ],
    ),
    (
        "bad-duration.yaml",
        [
            "{f}:3:29: triggers.error_rate.for: invalid duration '2 minutes': "
            "write a whole number and a unit, e.g. 90s, 2m, 1h, 1d",
            "{f}:6:5: triggers.latency_p95.for: invalid duration 120: add a unit, e.g. 120s or 120m (90s, 2m, 1h, 1d)",
        ],
    ),
    (
        "ratio-not-percent.yaml",
        ["{f}:5:5: triggers.error_rate.above: Input should be less than 1 (a ratio: 0.05 means 5%)"],
    ),
    (
        "steps-not-increasing.yaml",
        [
            "{f}:5:3: canary.steps: steps must strictly increase, but 25 follows 50",
            "{f}:12:3: canary.steps: the last step must be 100 (a canary that never reaches 100% is never promoted); "
            "got 50",
            "{f}:16:1: canary: step_for (2m) must be longer than metric_lag (3m), or no step is ever measured",
        ],
    ),
    (
        "duplicate-names",
        [
            "{f}/b.yaml:2:1: name: duplicate policy name 'shared' (first defined at {f}/a.yaml:1:1)",
            "{f}/b.yaml:7:1: match: policy 'same-match' has the same match as policy 'shared' ({f}/a.yaml:2:1); "
            "neither is more specific, so narrow or merge them",
        ],
    ),
    ("syntax-error.yaml", ["{f}:4:9: YAML syntax error: expected ',' or '}}', but got ':'"]),
    (
        "list-document.yaml",
        [
            "{f}:4:3: name: a policy name is lowercase letters, digits, '_', '.' and '-', "
            "starting with a letter or digit",
            "{f}:7:14: triggers.health.consecutive_failures: Input should be greater than or equal to 1",
            "{f}:8:3: a policy must be a mapping of keys (name, match, triggers, ...), not str",
        ],
    ),
    (
        "structure.yaml",
        [
            "{f}:1:1: name: required key is missing",
            "{f}:4:3: match.services: duplicate key 'services' (first at line 3)",
            "{f}:5:1: mode: Input should be 'enforce', 'dry-run' or 'notify'",
        ],
    ),
]


@pytest.mark.parametrize(("name", "expected"), INVALID_CASES, ids=[c[0] for c in INVALID_CASES])
def test_invalid_policies_report_every_problem_with_its_position(name: str, expected: list[str]) -> None:
    path = INVALID / name
    lines = [e.format(f=path) for e in expected]
    assert validate_paths([path]) == lines
    with pytest.raises(PolicyError) as caught:
        load_policies(path)
    assert isinstance(caught.value, PolicyLoadError)
    assert caught.value.problems == tuple(lines)
    # The exception's own message carries every line too (it is what the engine logs).
    assert all(line in str(caught.value) for line in lines)


def test_problems_from_several_files_come_in_file_then_line_order() -> None:
    lines = validate_paths([INVALID / "typo-key.yaml", INVALID / "ratio-not-percent.yaml"])
    assert [line.split(":")[0:2] for line in lines] == [
        [str(INVALID / "typo-key.yaml"), "6"],
        [str(INVALID / "typo-key.yaml"), "7"],
        [str(INVALID / "ratio-not-percent.yaml"), "5"],
    ]


def test_duplicate_names_across_two_paths_are_caught() -> None:
    [line] = validate_paths([DATA / "valid" / "canary-only.yaml", DATA / "valid" / "canary-only.yaml"])
    assert "duplicate policy name 'frontend-canary'" in line


# -- the models' own rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([10, 25, 50, 100], None),
        ([100], None),
        ([1, 2, 100], None),
        ([0, 100], "step 0 is not a traffic percentage in 1..100"),
        ([10, 150], "step 150 is not a traffic percentage in 1..100"),
        ([10, 10, 100], "steps must strictly increase, but 10 follows 10"),
        ([50, 25, 100], "steps must strictly increase, but 25 follows 50"),
        ([10, 50], "the last step must be 100"),
        ([], "List should have at least 1 item"),
    ],
    ids=["default", "straight-to-100", "small-steps", "zero", "over-100", "repeat", "decrease", "no-100", "empty"],
)
def test_canary_steps(steps: list[int], message: str | None) -> None:
    if message is None:
        assert Canary.model_validate({"steps": steps}).steps == steps
    else:
        with pytest.raises(ValueError, match=re.escape(message)):
            Canary.model_validate({"steps": steps})


def test_a_policy_must_do_something() -> None:
    with pytest.raises(ValueError, match="at least one trigger"):
        Policy.model_validate({"name": "idle"})
    assert Policy.model_validate({"name": "gate", "canary": {}}).canary is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("2m", timedelta(minutes=2)),
        (" 1h ", timedelta(hours=1)),
        ("1d", timedelta(days=1)),
    ],
    ids=["seconds", "minutes", "hours-padded", "days"],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["2 minutes", "1.5m", "m", "-2m", 120, 2.5], ids=str)
def test_parse_duration_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


@given(st.integers(min_value=0, max_value=10**7))
def test_duration_format_round_trips(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


def test_policy_set_refuses_duplicates_built_in_code() -> None:
    with pytest.raises(PolicyError, match="duplicate policy name 'a'"):
        PolicySet([policy("a", {"services": ["x"]}), policy("a", {"services": ["y"]})])
    with pytest.raises(PolicyError, match="same match block"):
        # An empty list and ["*"] mean the same thing, so they are the same block.
        PolicySet([policy("a", {"services": ["*"]}), policy("b", {"services": []})])


# -- matching: the specificity matrix ------------------------------------------------------

MATRIX_SET = PolicySet(
    [
        policy("default"),
        policy("checkout", {"services": ["checkout"]}),
        policy("check-glob", {"services": ["check*"]}),
        policy("prod-checkout", {"services": ["checkout"], "projects": ["shop-prod"]}),
        policy("team-payments", {"alert_labels": {"team": "payments"}}),
        policy("eu", {"regions": ["europe-*"]}),
    ]
)


# fmt: off
SPECIFICITY_CASES = [
    pytest.param(
        "shop-dev", "us-east1", "checkout", {}, "checkout",
        "policy 'checkout' matched: service 'checkout' exactly "
        "(most specific of 3 matching: checkout, check-glob, default)",
        id="exact-beats-glob-beats-star",
    ),
    pytest.param(
        "shop-dev", "us-east1", "checkout-v2", {}, "check-glob",
        "policy 'check-glob' matched: service 'checkout-v2' by glob 'check*' "
        "(most specific of 2 matching: check-glob, default)",
        id="glob-beats-star",
    ),
    pytest.param(
        "shop-dev", "us-east1", "search", {}, "default",
        "policy 'default' matched: it covers every service (the only matching policy)",
        id="only-star",
    ),
    pytest.param(
        "shop-prod", "us-east1", "checkout", {}, "prod-checkout",
        "policy 'prod-checkout' matched: service 'checkout' exactly, project 'shop-prod' exactly "
        "(most specific of 4 matching: prod-checkout, checkout, check-glob, default)",
        id="two-exact-dimensions",
    ),
    pytest.param(
        None, "us-east1", "checkout", {}, "checkout",
        "policy 'checkout' matched: service 'checkout' exactly "
        "(most specific of 3 matching: checkout, check-glob, default)",
        id="unknown-project-never-matches-a-project-list",
    ),
    pytest.param(
        "shop-dev", "europe-west1", "search", {}, "eu",
        "policy 'eu' matched: region 'europe-west1' by glob 'europe-*' (most specific of 2 matching: eu, default)",
        id="region-glob",
    ),
    pytest.param(
        "shop-dev", "europe-west1", "checkout-v2", {}, "check-glob",
        "policy 'check-glob' matched: service 'checkout-v2' by glob 'check*' "
        "(tied with 'eu' at score 1, chosen by name; 3 matching: check-glob, eu, default)",
        id="tie-broken-by-name",
    ),
    pytest.param(
        "shop-dev", "us-east1", "search", {"team": "payments"}, "team-payments",
        "policy 'team-payments' matched: label team=payments (most specific of 2 matching: team-payments, default)",
        id="label-adds-weight",
    ),
    pytest.param(
        "shop-dev", "us-east1", "search", {"team": "search"}, "default",
        "policy 'default' matched: it covers every service (the only matching policy)",
        id="label-value-must-be-equal",
    ),
    pytest.param(
        "shop-dev", "us-east1", "checkout", {"team": "payments"}, "checkout",
        "policy 'checkout' matched: service 'checkout' exactly (tied with 'team-payments' at score 2, "
        "chosen by name; 4 matching: checkout, team-payments, check-glob, default)",
        id="label-ties-exact-service",
    ),
    pytest.param(
        "shop-dev", "europe-west1", "checkout", {"rollback_policy": "eu"}, "eu",
        "policy 'eu' named by the alert's rollback_policy label: region 'europe-west1' by glob 'europe-*'",
        id="explicit-label-overrides-specificity",
    ),
    pytest.param(
        "shop-dev", "us-east1", "checkout", {"rollback_policy": "eu"}, None,
        "the alert's rollback_policy label names policy 'eu', whose match (regions europe-*) does not cover "
        "service 'checkout' in project 'shop-dev', region 'us-east1'",
        id="explicit-label-must-still-match",
    ),
    pytest.param(
        "shop-dev", "us-east1", "checkout", {"rollback_policy": "gone"}, None,
        "the alert's rollback_policy label names policy 'gone', which does not exist "
        "(known: check-glob, checkout, default, eu, prod-checkout, team-payments)",
        id="explicit-label-names-missing-policy",
    ),
    pytest.param(
        "shop-dev", "us-east1", "Checkout", {"rollback_policy": ""}, "default",
        "policy 'default' matched: it covers every service (the only matching policy)",
        id="case-sensitive-and-empty-label-ignored",
    ),
]
# fmt: on


@pytest.mark.parametrize(("project", "region", "service", "labels", "chosen", "reason"), SPECIFICITY_CASES)
def test_specificity(
    project: str | None,
    region: str | None,
    service: str,
    labels: dict[str, str],
    chosen: str | None,
    reason: str,
) -> None:
    selection = MATRIX_SET.select_for(project, region, service, labels=labels)
    assert (selection.policy.name if selection.policy else None) == chosen
    assert selection.reason == reason


def test_no_policy_matches() -> None:
    selection = PolicySet([policy("checkout", {"services": ["checkout"]})]).select_for("p", "r", "search")
    assert selection.policy is None
    assert selection.candidates == []
    assert selection.reason == ("no policy matches service 'search' in project 'p', region 'r' (policies: checkout)")


def test_select_reads_an_alert() -> None:
    alert = Alert(
        incident_id="0.abc",
        state="open",
        project="shop-prod",
        region="europe-west1",
        service="checkout",
        user_labels={"team": "payments"},
        started_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    selection = MATRIX_SET.select(alert)
    assert selection.policy is not None and selection.policy.name == "prod-checkout"
    assert selection.score == 4
    named = MATRIX_SET.select(alert.model_copy(update={"user_labels": {"rollback_policy": "team-payments"}}))
    assert named.policy is None  # the label requirement of team-payments is not met
    assert "does not cover" in named.reason


@pytest.mark.parametrize(
    ("match", "score"),
    [
        ({}, 0),
        ({"services": ["*", "checkout"]}, 2),
        ({"services": ["**"]}, 0),
        ({"services": ["checkou?"]}, 1),
        ({"services": ["[cd]heckout"]}, 1),
        ({"services": ["checkout"], "projects": ["shop-*"], "regions": ["europe-west1"]}, 5),
        ({"alert_labels": {"team": "payments", "tier": "1"}}, 4),
        ({"alert_labels": {"team": "payments", "tier": "2"}}, None),
        ({"services": ["CHECKOUT"]}, None),
    ],
    ids=[
        "empty-is-any",
        "best-pattern-counts",
        "stars-only-is-any",
        "question-mark-glob",
        "class-glob",
        "all-dimensions",
        "two-labels",
        "one-label-differs",
        "case-sensitive",
    ],
)
def test_score_match(match: dict[str, Any], score: int | None) -> None:
    got = score_match(
        Match.model_validate(match),
        project="shop-prod",
        region="europe-west1",
        service="checkout",
        labels={"team": "payments", "tier": "1"},
    )
    assert got == score


# -- matching: properties ------------------------------------------------------------------

SERVICES = ["checkout", "checkout-v2", "search", "payments-api"]
PATTERNS = ["*", "checkout", "check*", "payments-*", "search", "?earch", "nothing"]
PROJECTS = ["shop-prod", "shop-dev"]
REGIONS = ["europe-west1", "us-east1"]

matches = st.fixed_dictionaries(
    {},
    optional={
        "services": st.lists(st.sampled_from(PATTERNS), max_size=2),
        "projects": st.lists(st.sampled_from(["*", "shop-prod", "shop-*"]), max_size=2),
        "regions": st.lists(st.sampled_from(["*", "europe-west1", "europe-*", "us-*"]), max_size=2),
        "alert_labels": st.dictionaries(st.sampled_from(["team", "tier"]), st.sampled_from(["a", "b"]), max_size=2),
    },
)


@st.composite
def policy_sets(draw: st.DrawFn) -> list[Policy]:
    blocks = draw(st.lists(matches, min_size=1, max_size=6))
    return [policy(f"p{i}", block) for i, block in enumerate(blocks)]


def _build(policies: Sequence[Policy]) -> PolicySet:
    try:
        return PolicySet(policies)
    except PolicyError:
        assume(False)  # identical match blocks: the loader refuses those sets
        raise


@given(
    policy_sets(),
    st.randoms(use_true_random=False),
    st.sampled_from([*PROJECTS, None]),
    st.sampled_from(REGIONS),
    st.sampled_from(SERVICES),
    st.dictionaries(st.sampled_from(["team", "tier"]), st.sampled_from(["a", "b"]), max_size=2),
)
def test_selection_is_deterministic_and_maximal(
    policies: list[Policy],
    rnd: Any,
    project: str | None,
    region: str,
    service: str,
    labels: dict[str, str],
) -> None:
    policy_set = _build(policies)
    shuffled = list(policies)
    rnd.shuffle(shuffled)
    first = policy_set.select_for(project, region, service, labels=labels)
    again = PolicySet(shuffled).select_for(project, region, service, labels=labels)
    assert first == again  # independent of load order and of repetition

    scores = {
        p.name: s
        for p in policies
        if (s := score_match(p.match, project=project, region=region, service=service, labels=labels)) is not None
    }
    if not scores:
        assert first.policy is None and first.candidates == []
        return
    assert first.policy is not None
    best = max(scores.values())
    assert scores[first.policy.name] == best == first.score
    assert first.policy.name == min(name for name, s in scores.items() if s == best)
    assert first.candidates == sorted(scores, key=lambda n: (-scores[n], n))


# -- JSON Schema ---------------------------------------------------------------------------


def test_schema_file_is_up_to_date() -> None:
    shipped = (ROOT / "deploy" / "policy.schema.json").read_text(encoding="utf-8")
    assert shipped == schema_text(), "regenerate: python -m controller schema -o deploy/policy.schema.json"
    assert json.loads(shipped) == policy_json_schema()


def test_schema_describes_the_yaml() -> None:
    schema = policy_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] and schema["description"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["name"]
    assert list(schema["properties"]) == [
        "name",
        "description",
        "match",
        "mode",
        "triggers",
        "rollback",
        "canary",
        "verification",
        "notify",
    ]
    error_rate = schema["$defs"]["ErrorRateTrigger"]["properties"]
    assert "for" in error_rate and "for_" not in error_rate
    assert error_rate["for"]["type"] == "string"
    assert error_rate["for"]["default"] == "2m"
    assert re.fullmatch(error_rate["for"]["pattern"], "2m")
    assert not re.fullmatch(error_rate["for"]["pattern"], "2 minutes")
    assert schema["properties"]["mode"]["enum"] == ["enforce", "dry-run", "notify"]


def _schema_keys(node: Any) -> set[str]:
    keys: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties":
                keys |= set(value)
            keys |= _schema_keys(value)
    elif isinstance(node, list):
        for item in node:
            keys |= _schema_keys(item)
    return keys


def test_every_key_is_documented() -> None:
    docs = (ROOT / "docs" / "policies.md").read_text(encoding="utf-8")
    missing = sorted(k for k in _schema_keys(policy_json_schema()) if f"`{k}`" not in docs)
    assert missing == []
