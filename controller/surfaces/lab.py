"""The alerting lab: how long after a bad deploy is traffic back, on Cloud Monitoring's real timing.

``python -m controller lab [SCENARIO.yaml] [--json] [--plot FILE.png]`` simulates, on a virtual
clock (an hour in about a second), a Cloud Run service, its traffic, a deploy, Cloud Monitoring's
sampling (one point per revision and minute) and ingestion lag, the alert-policy evaluator
(``controller.evaluator``) on the alert policies ``alert-policies`` generates, and the
controller's real decision path (``controller.engine.Controller``: same policy selection,
verification, guards and traffic write, its clock injected) against the Cloud Run and Monitoring
emulators, with the real client libraries. Scenarios live in ``samples/lab/``; docs/lab.md
explains the model, the figures and the bench (``bench/mttr.py``).

What is modelled where:

* Cloud Run traffic and metrics: ``controller.emulator.traffic.TrafficSimulator`` (binomial 5xx,
  lognormal latencies, per-minute DELTA points), reading the emulated service's split each minute.
* Sampling and ingestion lag: :class:`Ingestion` here holds each minute's points back until
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

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, cast

import yaml
from pydantic import ConfigDict, Field, ValidationError

from controller.app.alertpolicies import generate
from controller.core.alert import Alert, alert_from_incident
from controller.core.evaluator import (
    AlertPolicySpec,
    ConditionSpec,
    MinuteFeed,
    PolicyEvaluator,
    evaluate_feed,
    parse_policy,
)
from controller.core.incident import parse_notification
from controller.core.models import Strict
from controller.core.policy import Duration, Policy, PolicySet
from controller.core.stats import Histogram, bucket_bounds, merge_all

if TYPE_CHECKING:
    from controller.app.engine import Controller
    from controller.emulator.monitoring import MonitoringEmulator

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = [
    "STRATEGIES",
    "LabResult",
    "LabStack",
    "Scenario",
    "ScenarioError",
    "add_command",
    "load_scenario",
    "run_scenario",
]

Strategy = Literal["default", "fast", "flagger", "crm"]
STRATEGIES: tuple[Strategy, ...] = ("default", "fast", "flagger", "crm")
ROOT = Path(__file__).resolve().parents[2]  # the repository root
SCENARIOS = ROOT / "samples" / "lab"
DEFAULT_SCENARIO = SCENARIOS / "bad-deploy.yaml"
DEPLOY_AT = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
FLAGGER_THRESHOLD = 5
CRM_WINDOW = timedelta(minutes=30)

EXIT_OK = 0
EXIT_EXPECTATION = 1  # the scenario's `expect` did not happen
EXIT_USAGE = 2
PROG = "python -m controller lab"

REQUEST_COUNT = "run.googleapis.com/request_count"
REQUEST_LATENCIES = "run.googleapis.com/request_latencies"


class ScenarioError(ValueError):
    """A scenario file that cannot be read or does not validate (one line, for the CLI)."""


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------


class _Model(Strict):
    model_config = ConfigDict(strict=False)


class Behaviour(_Model):
    """How one revision behaves (see ``controller.emulator.traffic.RevisionProfile``)."""

    error_rate: float = Field(default=0.005, ge=0.0, le=1.0)
    latency_ms: float = Field(default=120.0, gt=0.0)
    latency_sigma: float = Field(default=0.5, ge=0.0, le=3.0)


class Scenario(_Model):
    """One lab scenario (YAML). Revisions: ``older`` (optional) < ``stable`` (serving) < ``candidate``."""

    name: str = Field(min_length=1)
    description: str = ""
    project: str = "demo-proj"
    region: str = "us-central1"
    service: str = "checkout"
    policy: str = "default"
    requests_per_minute: int = Field(default=500, ge=1, le=100_000)
    baseline: Duration = timedelta(minutes=15)
    after: Duration = timedelta(minutes=40)
    ingestion_lag: Duration = timedelta(seconds=180)
    notification_delay: Duration = timedelta(seconds=10)
    older: Behaviour | None = None
    stable: Behaviour = Behaviour()
    candidate: Behaviour = Behaviour()
    candidate_percent: int = Field(default=100, ge=1, le=100)
    expect: Literal["rollback", "no-rollback", "refuse"] = "rollback"
    seed: int = 1


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


# --------------------------------------------------------------------------------------------
# Ingestion: sampling + lag, between the traffic simulator and the Monitoring emulator
# --------------------------------------------------------------------------------------------


@dataclass
class MinuteStat:
    """What one revision served in one minute (ending ``end``), as the lab saw it written."""

    end: datetime
    revision: str
    requests: int = 0
    errors: int = 0
    latency: Histogram | None = None
    share: int = 0

    def p95(self) -> float | None:
        return self.latency.percentile(95.0) if self.latency is not None and self.latency.count else None

    def slower_than(self, threshold_ms: float) -> int:
        if self.latency is None:
            return 0
        return sum(
            c
            for (low, _high), c in zip(bucket_bounds(self.latency.options), self.latency.counts, strict=True)
            if low >= threshold_ms
        )


class Ingestion:
    """Stands in for the Monitoring emulator's ``write_point`` for the traffic simulator: keeps each
    point until ``lag`` after its interval ends, then writes it; records per-minute stats."""

    def __init__(self, target: MonitoringEmulator, lag: timedelta) -> None:
        self.target = target
        self.lag = lag
        self.pending: list[tuple[datetime, tuple[Any, ...], dict[str, Any]]] = []
        self.stats: dict[tuple[datetime, str], MinuteStat] = {}

    def write_point(self, *args: Any, **kwargs: Any) -> None:
        metric_type, metric_labels, _rtype, resource, _start, end, value = args[:7]
        self.pending.append((end, args, kwargs))
        revision = str(resource["revision_name"])
        stat = self.stats.setdefault((end, revision), MinuteStat(end, revision))
        if metric_type == REQUEST_COUNT:
            stat.requests += int(value)
            if metric_labels.get("response_code_class") == "5xx":
                stat.errors += int(value)
        elif metric_type == REQUEST_LATENCIES and isinstance(value, Histogram):
            stat.latency = value if stat.latency is None else merge_all([stat.latency, value])

    def flush(self, now: datetime) -> None:
        """Make visible everything whose minute ended at least ``lag`` before ``now``."""
        keep = []
        for end, args, kwargs in self.pending:
            if end + self.lag <= now:
                self.target.write_point(*args, **kwargs)
            else:
                keep.append((end, args, kwargs))
        self.pending = keep


# --------------------------------------------------------------------------------------------
# The stack: emulators, clients, controller
# --------------------------------------------------------------------------------------------


class VirtualClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class LabStack:
    """Cloud Run and Monitoring emulators with clients, reused across runs (``reset`` between)."""

    def __init__(self, policies: PolicySet | None = None) -> None:
        self.clock = VirtualClock(DEPLOY_AT)
        self.policies = policies
        self._exit = contextlib.ExitStack()

    def __enter__(self) -> LabStack:
        from controller.adapters.monitoring import MonitoringClient
        from controller.adapters.policy_files import DEFAULT_POLICY_PATH, load_policies
        from controller.emulator.cloudrun import CloudRunEmulator
        from controller.emulator.monitoring import MonitoringEmulator, insecure_client

        if self.policies is None:
            self.policies = load_policies(DEFAULT_POLICY_PATH)
        self.run = self._exit.enter_context(CloudRunEmulator(clock=self.clock))
        self.monitoring = self._exit.enter_context(MonitoringEmulator())
        self.reader = insecure_client(self.monitoring.target)
        self._exit.callback(self.reader.transport.close)
        self.evidence = self._exit.enter_context(MonitoringClient(self.monitoring.target, deadline=10.0))
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def controller(self) -> Controller:
        from controller.adapters.cloudrun import CloudRunClient
        from controller.adapters.slack import LogOnlyNotifier
        from controller.app.engine import Controller
        from controller.app.settings import Settings

        assert self.policies is not None
        return Controller(
            Settings(),
            CloudRunClient(self.run.url),
            LogOnlyNotifier(),
            policies=self.policies,
            clock=self.clock,
            monitoring=self.evidence,
        )


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    at: datetime
    what: str
    detail: str = ""


@dataclass
class LabResult:
    """Everything one run saw; ``figures()`` are the numbers the CLI and the bench print."""

    scenario: Scenario
    strategy: Strategy
    seed: int
    deploy_at: datetime
    candidate: str
    stable: str
    marks: list[Mark] = field(default_factory=list)
    minutes: list[MinuteStat] = field(default_factory=list)
    outcome: str = "none"  # rolled-back | refused | none
    reason: str = ""
    error_threshold: float = 0.05
    latency_threshold_ms: float = 2000.0

    def first(self, what: str) -> Mark | None:
        return next((m for m in self.marks if m.what == what), None)

    def _since_deploy(self, what: str) -> float | None:
        mark = self.first(what)
        return None if mark is None else (mark.at - self.deploy_at).total_seconds()

    def bad_requests(self) -> int:
        """5xx plus responses slower than the latency threshold, served by the candidate."""
        return sum(
            m.errors + m.slower_than(self.latency_threshold_ms) for m in self.minutes if m.revision == self.candidate
        )

    def figures(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "strategy": self.strategy,
            "seed": self.seed,
            "expect": self.scenario.expect,
            "outcome": self.outcome,
            "as_expected": self.as_expected,
            "reason": self.reason,
            "time_to_detect_s": self._since_deploy("alert opened"),
            "time_to_traffic_shifted_s": self._since_deploy("traffic shifted"),
            "bad_requests_served": self.bad_requests(),
            "candidate_requests": sum(m.requests for m in self.minutes if m.revision == self.candidate),
        }

    @property
    def false_rollback(self) -> bool:
        return self.outcome == "rolled-back" and self.scenario.expect != "rollback"

    @property
    def as_expected(self) -> bool:
        wanted = {"rollback": "rolled-back", "refuse": "refused", "no-rollback": "none"}[self.scenario.expect]
        return self.outcome == wanted or (self.scenario.expect == "no-rollback" and self.outcome == "refused")

    def to_json(self) -> dict[str, Any]:
        return {
            "figures": self.figures(),
            "timeline": [{"at": m.at.isoformat(), "what": m.what, "detail": m.detail} for m in self.marks],
            "minutes": [
                {
                    "end": m.end.isoformat(),
                    "revision": m.revision,
                    "requests": m.requests,
                    "errors": m.errors,
                    "p95_ms": m.p95(),
                    "share": m.share,
                }
                for m in self.minutes
            ],
        }


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
        from controller.adapters.monitoring import Window

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


def _recovery(result: LabResult) -> None:
    shifted = result.first("traffic shifted")
    if shifted is None:
        return
    by_end: dict[datetime, tuple[int, int]] = {}
    for m in result.minutes:
        req, err = by_end.get(m.end, (0, 0))
        by_end[m.end] = (req + m.requests, err + m.errors)
    for end in sorted(by_end):
        req, err = by_end[end]
        if end - MINUTE >= shifted.at and req and err / req <= result.error_threshold:
            result.marks.append(Mark(end, "recovery", f"service 5xx {err}/{req} in the minute ending {end:%H:%M}"))
            result.marks.sort(key=lambda m: m.at)
            return


def run_scenario(
    stack: LabStack, scenario: Scenario, strategy: Strategy = "default", seed: int | None = None
) -> LabResult:
    """Simulate ``scenario`` once on ``stack`` (emulators reset first)."""
    result = _Run(stack, scenario, strategy, scenario.seed if seed is None else seed).run()
    _recovery(result)
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


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _offset(result: LabResult, at: datetime) -> str:
    seconds = int((at - result.deploy_at).total_seconds())
    sign = "-" if seconds < 0 else "+"
    seconds = abs(seconds)
    return f"T{sign}{seconds // 60:02d}:{seconds % 60:02d}"


def _secs(value: float | None) -> str:
    if value is None:
        return "never"
    return f"{int(value) // 60}m{int(value) % 60:02d}s"


def render(result: LabResult) -> str:
    s = result.scenario
    lines = [
        f"scenario {s.name} ({result.strategy}, seed {result.seed}): {s.description}".rstrip(": "),
        f"  {s.requests_per_minute} req/min; candidate {result.candidate} at {s.candidate_percent}%: "
        f"5xx {s.candidate.error_rate:.1%}, median {s.candidate.latency_ms:g} ms; ingestion lag "
        f"{int(s.ingestion_lag.total_seconds())}s",
        "",
    ]
    for m in result.marks:
        lines.append(f"  {_offset(result, m.at)}  {m.what:<25} {m.detail}")
    f = result.figures()
    lines += [
        "",
        f"  time to detect:          {_secs(f['time_to_detect_s'])}",
        f"  time to traffic shifted: {_secs(f['time_to_traffic_shifted_s'])}",
        f"  bad requests served:     {f['bad_requests_served']} (of {f['candidate_requests']} to the candidate)",
        f"  outcome:                 {result.outcome} (expected {s.expect}: {'yes' if result.as_expected else 'NO'})",
    ]
    return "\n".join(lines) + "\n"


def plot(result: LabResult, path: str | Path) -> None:
    """The timeline as a PNG: 5xx ratio and p95 per revision, traffic share, alert/action marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    revisions = sorted({m.revision for m in result.minutes})
    ends = sorted({m.end for m in result.minutes})
    xs = [(e - result.deploy_at).total_seconds() / 60 for e in ends]
    by = {(m.end, m.revision): m for m in result.minutes}
    nan = float("nan")
    fig, axes = plt.subplots(3, 1, figsize=(8, 6), sharex=True, dpi=80)
    for rev in revisions:
        rows = [by.get((e, rev)) for e in ends]
        # A minute without the revision is a gap in its curves and 0 % of traffic, not a line across.
        axes[0].plot(xs, [m.errors / m.requests if m and m.requests else nan for m in rows], label=rev)
        axes[1].plot(xs, [(m.p95() or nan) if m else nan for m in rows], label=rev)
        axes[2].step(xs, [m.share if m else 0 for m in rows], where="pre", label=rev)
    axes[2].set_ylim(-5, 105)
    axes[0].axhline(result.error_threshold, color="grey", linestyle=":")
    axes[1].axhline(result.latency_threshold_ms, color="grey", linestyle=":")
    axes[0].set_ylabel("5xx ratio")
    axes[1].set_ylabel("p95 ms")
    axes[2].set_ylabel("traffic %")
    axes[2].set_xlabel("minutes after deploy")
    colours = {"deploy": "black", "alert opened": "red", "traffic shifted": "green", "alert closed": "blue"}
    for m in result.marks:
        if m.what in colours:
            for ax in axes:
                ax.axvline((m.at - result.deploy_at).total_seconds() / 60, color=colours[m.what], alpha=0.5)
    axes[0].legend(fontsize=7, loc="upper right")
    axes[0].set_title(
        f"{result.scenario.name} ({result.strategy}): " + ", ".join(f"{k}={v}" for k, v in colours.items()), fontsize=8
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def add_command(subparsers: Subparsers) -> None:
    """Register ``lab`` on the controller's CLI."""
    parser = subparsers.add_parser(
        "lab",
        help="simulate a deploy on Cloud Monitoring's timing: time to rollback, bad requests served",
        description="Simulate a scenario on a virtual clock: traffic, a deploy, Monitoring's sampling and "
        "ingestion lag, the generated alert policies and the controller's real decision path against the "
        "emulators. Exit codes: 0 the scenario's `expect` happened, 1 it did not, 2 usage error. See docs/lab.md.",
    )
    parser.add_argument(
        "scenario", nargs="?", metavar="SCENARIO.yaml", help=f"default: {DEFAULT_SCENARIO.relative_to(ROOT)}"
    )
    parser.add_argument(
        "--strategy", choices=STRATEGIES, default="default", help="detection strategy (default: default)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's)")
    parser.add_argument("--json", action="store_true", help="print figures, timeline and minutes as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the timeline with matplotlib")
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    path = args.scenario or str(DEFAULT_SCENARIO)
    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        print(f"{PROG}: error: {exc} (see samples/lab/ for examples)", file=err)
        return EXIT_USAGE
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(f"{PROG}: error: --plot needs matplotlib: pip install -r requirements-dev.txt", file=err)
            return EXIT_USAGE
    try:
        with quiet_logs(), LabStack() as stack:
            result = run_scenario(stack, scenario, args.strategy, args.seed)
    except ScenarioError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return EXIT_USAGE
    if args.json:
        out.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        out.write(render(result))
    if args.plot:
        try:
            plot(result, args.plot)
        except OSError as exc:
            print(f"{PROG}: error: cannot write {args.plot}: {exc.strerror}", file=err)
            return EXIT_USAGE
        print(f"plot written to {args.plot}", file=err)
    return EXIT_OK if result.as_expected else EXIT_EXPECTATION


def scenario_paths() -> Sequence[Path]:
    """The shipped scenarios, in name order."""
    return sorted(SCENARIOS.glob("*.yaml"))
