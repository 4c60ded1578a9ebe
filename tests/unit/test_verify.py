"""Evidence before action: the verdict rules, and how decide() uses them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from support import T0, alert, rev, state

from controller.core.decide import Reason, decide
from controller.core.ledger import Ledger
from controller.core.policy import Policy
from controller.core.verify import (
    Measure,
    Verdict,
    Verification,
    attribute,
    judge,
    measure,
    trigger_window,
    unavailable,
)

POLICY = Policy.model_validate(
    {
        "name": "default",
        "triggers": {
            "error_rate": {"above": 0.05, "for": "2m", "min_requests": 50},
            "latency_p95": {"above_ms": 2000, "for": "2m", "min_requests": 50},
            "health": {"consecutive_failures": 3},
        },
    }
)
NOW = T0 + timedelta(minutes=7)
START, END = NOW - timedelta(minutes=2), NOW
REVS = [rev("checkout-00040-aaa", 1), rev("checkout-00041-abc", 2), rev("checkout-00042-xyz", 3)]


@dataclass(frozen=True)
class N:
    revision: str = "checkout-00042-xyz"
    requests: int = 0
    errors: int = 0
    latency_count: int = 0
    p95_ms: float | None = None
    health_failures: int | None = None

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def error_ratio_lower(self) -> float:
        return self.error_ratio * 0.9

    @property
    def error_ratio_upper(self) -> float:
        return min(1.0, self.error_ratio * 1.1)


@pytest.mark.parametrize(
    ("trigger", "numbers", "breached", "text"),
    [
        pytest.param(
            "error_rate", N(requests=20_412, errors=3_654), True, "5xx 17.9% of 20,412 requests", id="5xx-breach"
        ),
        pytest.param("error_rate", N(requests=20_000, errors=200), False, "5xx 1% of 20,000", id="5xx-fine"),
        pytest.param("error_rate", N(requests=49, errors=49), None, "only 49 requests (need 50", id="5xx-too-few"),
        pytest.param("error_rate", N(), None, "only 0 requests", id="5xx-no-traffic"),
        pytest.param(
            "latency_p95", N(latency_count=900, p95_ms=2450.0), True, "p95 2,450 ms over 900", id="p95-breach"
        ),
        pytest.param("latency_p95", N(latency_count=900, p95_ms=300.0), False, "p95 300 ms", id="p95-fine"),
        pytest.param("latency_p95", N(latency_count=10, p95_ms=9000.0), None, "only 10 requests", id="p95-too-few"),
        pytest.param("health", N(health_failures=4), True, "4 failed health checks", id="health-breach"),
        pytest.param("health", N(health_failures=0), False, "0 failed", id="health-fine"),
        pytest.param("health", N(health_failures=None), None, "no per-revision probe data", id="health-no-data"),
    ],
)
def test_measure(trigger: str, numbers: N, breached: bool | None, text: str) -> None:
    m = measure(POLICY, trigger, numbers, START, END)  # type: ignore[arg-type]
    assert m.breached is breached
    assert text in m.text


def _m(breached: bool | None, revision: str = "checkout-00042-xyz") -> Measure:
    return Measure(
        revision=revision, start=START, end=END, requests=100, value=0.1, threshold=0.05, breached=breached, text="t"
    )


@pytest.mark.parametrize(
    ("suspect", "target", "verdict", "target_as_bad"),
    [
        pytest.param(True, False, Verdict.CONFIRMED, False, id="confirmed"),
        pytest.param(True, True, Verdict.CONFIRMED, True, id="both-fail"),
        pytest.param(False, True, Verdict.NOT_CONFIRMED, True, id="not-confirmed"),
        pytest.param(None, None, Verdict.INCONCLUSIVE, False, id="too-little-data"),
        pytest.param(True, None, Verdict.CONFIRMED, False, id="target-unknown"),
    ],
)
def test_judge(suspect: bool | None, target: bool | None, verdict: Verdict, target_as_bad: bool) -> None:
    t = _m(target, "checkout-00041-abc") if target is not None else None
    v = judge(_m(suspect), t)
    assert v.verdict is verdict
    assert v.target_as_bad is target_as_bad


def test_trigger_window_uses_the_policy_for() -> None:
    assert trigger_window(POLICY, "error_rate", timedelta(minutes=5)) == timedelta(minutes=2)
    assert trigger_window(POLICY, "health", timedelta(minutes=10)) == timedelta(minutes=10)
    assert trigger_window(POLICY, "health", None) == timedelta(minutes=5)


def test_attribute_blames_the_worst_breaching_serving_revision() -> None:
    numbers = [
        N(revision="a", requests=1000, errors=80),
        N(revision="b", requests=1000, errors=300),
        N(revision="c", requests=1000, errors=900),  # worst, but not serving
        N(revision="d", requests=1000, errors=10),
    ]
    assert attribute(POLICY, "error_rate", numbers, ["a", "b", "d"], START, END) == "b"
    assert attribute(POLICY, "error_rate", numbers, ["d"], START, END) is None


LIVE = state(REVS)


def _decide(verification: Verification, policy: Policy = POLICY) -> Reason:
    return decide(alert(), policy, LIVE, Ledger(), NOW, verification=verification).reason


def _with(**verification: object) -> Policy:
    return POLICY.model_copy(update={"verification": POLICY.verification.model_copy(update=verification)})


@pytest.mark.parametrize(
    ("verification", "policy", "expected"),
    [
        pytest.param(judge(_m(True), _m(False)), POLICY, Reason.ROLLED_BACK, id="confirmed"),
        pytest.param(judge(_m(False), _m(False)), POLICY, Reason.NOT_CONFIRMED, id="not-confirmed"),
        pytest.param(judge(_m(True), _m(True)), POLICY, Reason.TARGET_ALSO_FAILING, id="both-fail"),
        pytest.param(
            judge(_m(True), _m(True)),
            _with(compare_target=False),
            Reason.ROLLED_BACK,
            id="both-fail-no-compare",
        ),
        pytest.param(judge(_m(None), None), POLICY, Reason.ROLLED_BACK, id="inconclusive-default-act"),
        pytest.param(judge(_m(None), None), _with(on_inconclusive="skip"), Reason.UNVERIFIED, id="inconclusive-skip"),
        pytest.param(unavailable("timeout"), POLICY, Reason.ROLLED_BACK, id="unavailable-default-act"),
        pytest.param(unavailable("timeout"), _with(on_unavailable="skip"), Reason.UNVERIFIED, id="unavailable-skip"),
    ],
)
def test_verification_in_the_guard_chain(verification: Verification, policy: Policy, expected: Reason) -> None:
    assert _decide(verification, policy) is expected


def test_acting_on_the_alert_alone_is_said_out_loud() -> None:
    d = decide(alert(), POLICY, LIVE, Ledger(), NOW, verification=unavailable("no credentials"))
    assert d.reason is Reason.ROLLED_BACK
    assert "acting on the alert alone" in d.message
    assert "Cloud Monitoring unavailable (no credentials)" in d.evidence
