"""The alerting lab: how long after a bad deploy is traffic back, on Cloud Monitoring's real timing.

``python -m controller lab [SCENARIO.yaml] [--json] [--plot FILE.png]`` simulates, on a virtual
clock (an hour in about a second), a Cloud Run service, its traffic, a deploy, Cloud Monitoring's
sampling (one point per revision and minute) and ingestion lag, the alert-policy evaluator
(``controller.core.evaluator``) on the alert policies ``alert-policies`` generates, and the
controller's real decision path (``controller.engine.Controller``: same policy selection,
verification, guards and traffic write, its clock injected) against the Cloud Run and Monitoring
emulators, with the real client libraries. Scenarios live in ``samples/lab/``; docs/lab.md
explains the model, the figures and the bench (``bench/mttr.py``).

What is modelled where:

* Cloud Run traffic and metrics: ``controller.emulator.traffic.TrafficSimulator`` (binomial 5xx,
  lognormal latencies, per-minute DELTA points), reading the emulated service's split each minute.
* Sampling and ingestion lag: ``controller.surfaces.lab_stack.Ingestion`` holds each minute's points back until
  ``ingestion_lag`` after the minute ends, then writes them to the Monitoring emulator; until then
  neither the evaluator nor the controller's evidence queries can see them.
* Alerting: every evaluation runs at *data time* ``now - ingestion_lag`` (Monitoring evaluates
  points as they arrive), reading the condition's minutes from the emulator through
  ``controller.alert_reader``; opened/closed incidents reach the controller as schema-1.2
  notifications ``notification_delay`` later.
* Strategies compared by the bench: ``default`` (the generated policies as they are), ``fast``
  (the same with ``duration: 0s``: the controller's evidence check is the only filter),
  ``flagger`` (a 1-minute poll of the candidate's last minute, rollback after 5 failed checks,
  Flagger's ``interval`` x ``threshold``), ``crm`` (cloud-run-release-manager: a 1-minute tick
  judging the candidate over a 30-minute window). The polls act through the same controller.

Nothing here is imported by the Cloud Function (``main.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml
from pydantic import ValidationError

from controller.core.alert import Alert, alert_from_incident
from controller.core.alertpolicies import generate
from controller.core.alertpolicy_spec import AlertPolicySpec, ConditionSpec, parse_policy
from controller.core.evaluator import PolicyEvaluator, evaluate_feed
from controller.core.incident import parse_notification
from controller.core.lab_scenario import (
    CRM_WINDOW,
    DEPLOY_AT,
    FLAGGER_THRESHOLD,
    MINUTE,
    STRATEGIES,
    LabResult,
    Mark,
    Scenario,
    ScenarioError,
    Strategy,
    mark_recovery,
)
from controller.core.policy import Policy
from controller.core.policy_matching import PolicySet
from controller.core.series_values import MinuteFeed
from controller.surfaces.lab_stack import Ingestion, LabStack

if TYPE_CHECKING:
    from controller.emulator.monitoring import MonitoringEmulator

__all__ = [
    "STRATEGIES",
    "LabResult",
    "LabStack",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "quiet_logs",
    "run_scenario",
    "scenario_paths",
]

ROOT = Path(__file__).resolve().parents[2]  # the repository root
SCENARIOS = ROOT / "samples" / "lab"
DEFAULT_SCENARIO = SCENARIOS / "bad-deploy.yaml"


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario; :class:`ScenarioError` with one line saying what is wrong."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: a scenario is a mapping (name: ..., candidate: ...)")
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top)"
        raise ScenarioError(f"{path}: {where}: {first['msg']}") from exc


def _alert_bodies(policies: PolicySet, policy: str, strategy: Strategy) -> list[AlertPolicySpec]:
    bodies = [g.body for g in generate(policies) if g.policy == policy]
    if strategy == "fast":
        bodies = json.loads(json.dumps(bodies))
        for body in bodies:
            for cond in body["conditions"]:
                cond["conditionThreshold"]["duration"] = "0s"
    return [parse_policy(b) for b in bodies]


def _revision_names(s: Scenario) -> tuple[str, str, str]:
    return f"{s.service}-00040-old", f"{s.service}-00041-stb", f"{s.service}-00042-new"


class _Run:
    """The state of one simulation (see :func:`run_scenario`)."""

    def __init__(self, stack: LabStack, scenario: Scenario, strategy: Strategy, seed: int) -> None:
        from controller.emulator.cloudrun import RevisionSpec
        from controller.emulator.traffic import RevisionProfile, TrafficSimulator

        assert stack.policies is not None
        policy = stack.policies.get(scenario.policy)
        if policy is None:
            raise ScenarioError(f"scenario {scenario.name}: no rollback policy named {scenario.policy!r}")
        self.policy: Policy = policy
        self.stack, self.s, self.strategy = stack, scenario, strategy
        stack.run.reset()
        stack.monitoring.reset()
        older, stable, candidate = _revision_names(scenario)
        start = DEPLOY_AT - scenario.baseline
        stack.clock.now = start
        revisions = [RevisionSpec(name=stable, create_time=DEPLOY_AT - timedelta(days=2))]
        if scenario.older is not None:
            revisions.insert(0, RevisionSpec(name=older, create_time=DEPLOY_AT - timedelta(days=5)))
        stack.run.add_service(scenario.project, scenario.region, scenario.service, revisions=revisions)
        self.ingestion = Ingestion(stack.monitoring, scenario.ingestion_lag)
        self.sim = TrafficSimulator(
            stack.run,
            cast("MonitoringEmulator", self.ingestion),
            project=scenario.project,
            region=scenario.region,
            service=scenario.service,
            requests_per_minute=scenario.requests_per_minute,
            seed=seed,
            start=start,
        )
        for name, b in ((older, scenario.older), (stable, scenario.stable), (candidate, scenario.candidate)):
            if b is not None:
                self.sim.set_profile(name, RevisionProfile(b.error_rate, b.latency_ms, b.latency_sigma))
        self.revision_spec = RevisionSpec(name=candidate, create_time=DEPLOY_AT)
        err = policy.triggers.error_rate
        lat = policy.triggers.latency_p95
        self.result = LabResult(
            scenario,
            strategy,
            seed,
            DEPLOY_AT,
            candidate,
            stable,
            error_threshold=err.above if err else 1.0,
            latency_threshold_ms=lat.above_ms if lat else float("inf"),
        )
        self.controller = stack.controller()
        self.evaluators = (
            [PolicyEvaluator(b, project=scenario.project) for b in _alert_bodies(stack.policies, policy.name, strategy)]
            if strategy in ("default", "fast")
            else []
        )
        keep = max((c.look_back for e in self.evaluators for c in e.policy.conditions), default=MINUTE)
        self.feeds = [MinuteFeed(keep + MINUTE) for _ in self.evaluators]
        self.failed_checks = 0
        self.acted = False
        self.first_bad_seen = False

    # -- the loop ---------------------------------------------------------------------------

    def mark(self, at: datetime, what: str, detail: str = "") -> None:
        self.result.marks.append(Mark(at, what, detail))

    def minute(self) -> None:
        split = self.sim.split()
        self.sim.advance(1)
        now = self.sim.now
        self.stack.clock.now = now
        for (end, _rev), stat in list(self.ingestion.stats.items()):
            if end == now:
                stat.share = split.get(stat.revision, 0)
                self.result.minutes.append(stat)
        self.ingestion.flush(now)

    def run(self) -> LabResult:
        s = self.s
        while self.sim.now < DEPLOY_AT:
            self.minute()
        self.stack.run.add_revision(s.project, s.region, s.service, self.revision_spec)
        candidate, stable = self.result.candidate, self.result.stable
        if s.candidate_percent < 100:
            self.stack.run.set_traffic(
                s.project,
                s.region,
                s.service,
                [
                    {"type": "REVISION", "revision": stable, "percent": 100 - s.candidate_percent},
                    {"type": "REVISION", "revision": candidate, "percent": s.candidate_percent},
                ],
            )
        self.mark(DEPLOY_AT, "deploy", f"{candidate} takes {s.candidate_percent}% of traffic")
        end = DEPLOY_AT + s.after
        for _ in range(int(s.after / MINUTE) + 1):
            if self.sim.now >= end:
                break
            self.minute()
            self.tick(self.sim.now)
        self.result.marks.sort(key=lambda m: m.at)
        return self.result

    def tick(self, now: datetime) -> None:
        data_time = now - self.s.ingestion_lag
        self._first_bad_visible(now, data_time)
        if data_time <= DEPLOY_AT:
            return
        if self.strategy in ("default", "fast"):
            self._evaluate(now, data_time)
        elif not self.acted:
            self._poll(now, data_time)

    def _first_bad_visible(self, now: datetime, data_time: datetime) -> None:
        if self.first_bad_seen:
            return
        for m in self.result.minutes:
            if m.revision != self.result.candidate or m.end > data_time or not m.requests:
                continue
            p95 = m.p95()
            if m.errors / m.requests > self.result.error_threshold or (
                p95 is not None and p95 > self.result.latency_threshold_ms
            ):
                self.first_bad_seen = True
                self.mark(now, "first bad minute visible", f"minute ending {m.end:%H:%M} of {m.revision}")
                return

    def _evaluate(self, now: datetime, data_time: datetime) -> None:
        from controller.adapters.alert_reader import read_minutes

        for evaluator, feed in zip(self.evaluators, self.feeds, strict=True):
            for cond in evaluator.policy.conditions:
                sides = ("num", "den") if cond.is_ratio else ("num",)
                for side in sides:
                    start = data_time - cond.look_back
                    for group, end, value in read_minutes(
                        self.stack.reader, self.s.project, cond, side, start, data_time
                    ):
                        feed.add(cond.name, side, group, end, value)
            for event in evaluate_feed(evaluator, feed, data_time):
                cond = evaluator.condition(event.incident.condition)
                what = "alert opened" if event.state == "open" else "alert closed"
                self.mark(now, what, f"{evaluator.policy.display_name} ({_observed(event.notification)})")
                self._deliver(now, alert_from_incident(parse_notification(json.dumps(event.notification))), cond)

    def _poll(self, now: datetime, data_time: datetime) -> None:
        from controller.core.evidence import Window

        candidate = self.result.candidate
        if self.strategy == "flagger":
            window = Window(start=data_time - MINUTE, end=data_time)
        else:
            window = Window(start=max(DEPLOY_AT, data_time - CRM_WINDOW), end=data_time)
        ref = self.controller_ref()
        found = self.stack.evidence.evidence(ref, window, signals=frozenset({"error_rate", "latency"})).get(candidate)
        if not found.requests:
            return
        err, lat = self.policy.triggers.error_rate, self.policy.triggers.latency_p95
        failing: str | None = None
        if err and found.error_ratio > err.above and (self.strategy == "flagger" or found.requests >= err.min_requests):
            failing = "error_rate"
        elif lat and found.p95_ms is not None and found.p95_ms > lat.above_ms:
            failing = "latency_p95"
        if failing is None:
            return
        if self.strategy == "flagger":
            self.failed_checks += 1
            if self.failed_checks < FLAGGER_THRESHOLD:
                return
        detail = f"{failing}: {found.errors}/{found.requests} 5xx, p95 {found.p95_ms or 0:.0f} ms over {window.length}"
        self.mark(now, "alert opened", f"{self.strategy} check failed ({detail})")
        alert = Alert(
            incident_id=f"{self.strategy}-{now:%H%M}",
            state="open",
            project=self.s.project,
            region=self.s.region,
            service=self.s.service,
            revision=candidate,
            trigger=failing,  # type: ignore[arg-type]
            started_at=now,
        )
        self._deliver(now, alert, None)

    def controller_ref(self) -> Any:
        from controller.core.state import ServiceRef

        return ServiceRef(project=self.s.project, region=self.s.region, service=self.s.service)

    def _deliver(self, now: datetime, alert: Alert, cond: ConditionSpec | None) -> None:
        from controller.core.decide import Reason

        at = now + self.s.notification_delay
        self.stack.clock.now = at
        try:
            outcome = self.controller.handle_alert(alert)
        finally:
            self.stack.clock.now = now
        decision = outcome.decision
        if decision is None:
            self.mark(at, "decision", f"error: {outcome.error}")
            return
        if alert.state == "closed":
            return
        self.mark(at, "decision", f"{decision.reason.value}: {decision.message}")
        if decision.reason is Reason.ROLLED_BACK:
            self.acted = True
            self.result.outcome, self.result.reason = "rolled-back", decision.reason.value
            self.mark(at, "traffic shifted", f"{decision.suspect} → {decision.target} (100%)")
        elif decision.reason in (Reason.TARGET_ALSO_FAILING, Reason.NOT_CONFIRMED, Reason.NO_TARGET):
            self.acted = self.strategy in ("flagger", "crm")
            if self.result.outcome == "none":
                self.result.outcome, self.result.reason = "refused", decision.reason.value


def _observed(notification: Mapping[str, Any]) -> str:
    incident = notification["incident"]
    return (
        f"{incident['state']}, value {incident.get('observed_value') or 'n/a'}, threshold {incident['threshold_value']}"
    )


def run_scenario(
    stack: LabStack, scenario: Scenario, strategy: Strategy = "default", seed: int | None = None
) -> LabResult:
    """Simulate ``scenario`` once on ``stack`` (emulators reset first)."""
    result = _Run(stack, scenario, strategy, scenario.seed if seed is None else seed).run()
    mark_recovery(result)
    return result


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """The controller logs one JSON line per delivery; the lab prints its own timeline instead."""
    names = ("controller", "controller.alert")
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in names]
    for logger, _ in saved:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def scenario_paths() -> Sequence[Path]:
    """The shipped scenarios, in name order."""
    return sorted(SCENARIOS.glob("*.yaml"))
