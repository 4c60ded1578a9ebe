"""Backtest a rollback policy on history: what would the controller have done last week?

``python -m controller backtest SERVICE --region R [--project P] [--since 7d] [--policy NAME]
[--json] [--plot FILE.png]`` reads the service's revisions (create times) from Cloud Run and its
per-revision history from Cloud Monitoring, replays the alert policies ``alert-policies``
generates for the rollback policy through ``controller.evaluator``, minute by minute, and at each
would-be incident asks the controller's decision (``controller.decide.decide``, with the evidence
check of ``controller.verify`` on the same history) what it would have done. docs/backtest.md
documents the output, including the stable ``--json`` document (:data:`JSON_SHAPE`).

Bounded memory: Monitoring is read one chunk (:data:`CHUNK`, 6 hours) at a time, per condition,
with pagination, and the evaluator keeps only its look-back; a week of per-minute points for 50
revisions never sits in memory at once. Progress goes to stderr.

How the past is reconstructed (Cloud Run keeps no traffic history): at an incident, the revisions
are those created by then (ready as they are now), and the traffic split is each revision's share
of the requests in the trigger's window. The ledger (cooldown, daily budget, quarantine, last
good) evolves with the backtest's own would-be rollbacks; after a would-be rollback of a revision,
its later incidents are counted as ``suppressed`` (the controller would already have moved its
traffic). The policy is judged as if in ``enforce`` mode; a ``notify`` policy reports ``notify``.

Exit codes: 0 done, 1 Cloud Run or Monitoring could not be read, 2 usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from controller.app.alertpolicies import generate
from controller.core.alert import Alert, alert_from_incident
from controller.core.decide import Decision, Reason, decide
from controller.core.evaluator import ConditionSpec, MinuteFeed, PolicyEvaluator, evaluate_feed, parse_policy
from controller.core.incident import parse_notification
from controller.core.ledger import Ledger
from controller.core.policy import Policy, PolicySet
from controller.core.state import Revision, ServiceRef, ServiceState, TrafficTarget

if TYPE_CHECKING:
    from controller.adapters.monitoring import MonitoringApi

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["CHUNK", "JSON_SHAPE", "Backtest", "BacktestError", "add_command", "run_backtest"]

CHUNK: Final = timedelta(hours=6)
MINUTE: Final = timedelta(minutes=1)
# A deploy "nearby": the suspect revision was created at most this long before the incident.
DEPLOY_NEARBY: Final = timedelta(hours=1)
MAX_SINCE: Final = timedelta(days=42)  # Cloud Monitoring keeps Cloud Run metrics for 6 weeks

EXIT_OK = 0
EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2
PROG = "python -m controller backtest"

#: The ``--json`` document, documented in docs/backtest.md; keys are stable (new keys may be added
#: to ``evidence`` and ``summary`` only).
JSON_SHAPE: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["service", "since", "until", "policy", "incidents", "summary"],
    "properties": {
        "service": {"type": "string"},
        "since": {"type": "string", "format": "date-time"},
        "until": {"type": "string", "format": "date-time"},
        "policy": {"type": "string"},
        "incidents": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "opened_at",
                    "closed_at",
                    "trigger",
                    "suspect",
                    "action",
                    "target",
                    "reason",
                    "evidence",
                ],
                "properties": {
                    "opened_at": {"type": "string", "format": "date-time"},
                    "closed_at": {"type": ["string", "null"], "format": "date-time"},
                    "trigger": {"type": "string", "enum": ["error_rate", "latency_p95", "health"]},
                    "suspect": {"type": "string"},
                    "action": {"type": "string", "enum": ["rollback", "refuse", "notify"]},
                    "target": {"type": ["string", "null"]},
                    "reason": {"type": "string"},
                    "evidence": {"type": "object"},
                },
            },
        },
        "summary": {
            "type": "object",
            "required": ["incidents", "would_roll_back", "refused", "notify", "no_deploy_nearby", "suppressed"],
            "properties": {
                "incidents": {"type": "integer"},
                "would_roll_back": {"type": "integer"},
                "refused": {"type": "integer"},
                "notify": {"type": "integer"},
                "no_deploy_nearby": {"type": "integer"},
                "suppressed": {"type": "integer"},
                "revisions": {"type": "integer"},
                "minutes": {"type": "integer"},
            },
        },
    },
}

_SINCE = re.compile(r"^(\d+)([mhd])$")
_UNIT = {"m": 60, "h": 3600, "d": 86400}
_REFUSALS = frozenset(
    {
        Reason.TARGET_ALSO_FAILING,
        Reason.NOT_CONFIRMED,
        Reason.NO_TARGET,
        Reason.COOLDOWN,
        Reason.BUDGET_SPENT,
        Reason.HELD,
        Reason.UNVERIFIED,
    }
)


class BacktestError(Exception):
    """Cloud Run or Monitoring could not be read (exit 1), with a one-line message."""


def parse_since(text: str) -> timedelta:
    m = _SINCE.match(text.strip())
    if not m:
        raise ValueError(f"--since {text!r}: write a number and a unit, e.g. 90m, 12h, 7d")
    value = timedelta(seconds=int(m.group(1)) * _UNIT[m.group(2)])
    if not timedelta(minutes=10) <= value <= MAX_SINCE:
        raise ValueError(f"--since {text}: between 10m and 42d (Cloud Monitoring keeps Cloud Run metrics 6 weeks)")
    return value


@dataclass
class Found:
    """One would-be incident and what the controller would have done."""

    opened_at: datetime
    closed_at: datetime | None
    trigger: str
    suspect: str
    action: str
    target: str | None
    reason: str
    evidence: dict[str, Any]
    incident_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "opened_at": self.opened_at.isoformat(),
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
            "trigger": self.trigger,
            "suspect": self.suspect,
            "action": self.action,
            "target": self.target,
            "reason": self.reason,
            "evidence": self.evidence,
        }


@dataclass
class Backtest:
    service: ServiceRef
    since: datetime
    until: datetime
    policy: str
    incidents: list[Found] = field(default_factory=list)
    suppressed: int = 0
    revisions: int = 0
    minutes: int = 0
    hourly: dict[str, dict[datetime, list[float]]] = field(default_factory=dict)  # for --plot

    def summary(self) -> dict[str, int]:
        count = {a: sum(1 for i in self.incidents if i.action == a) for a in ("rollback", "refuse", "notify")}
        return {
            "incidents": len(self.incidents),
            "would_roll_back": count["rollback"],
            "refused": count["refuse"],
            "notify": count["notify"],
            "no_deploy_nearby": sum(1 for i in self.incidents if not i.evidence.get("deploy_nearby")),
            "suppressed": self.suppressed,
            "revisions": self.revisions,
            "minutes": self.minutes,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "service": str(self.service),
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "policy": self.policy,
            "incidents": [i.to_json() for i in self.incidents],
            "summary": self.summary(),
        }


# --------------------------------------------------------------------------------------------
# Reading Cloud Run
# --------------------------------------------------------------------------------------------


def read_revisions(endpoint: str | None, ref: ServiceRef, timeout: float = 30.0) -> list[Revision]:
    """Every revision of the service (the pager follows ``nextPageToken``), oldest first."""
    from google.cloud import run_v2

    kwargs: dict[str, Any] = {"transport": "rest"}
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        kwargs["credentials"] = AnonymousCredentials()  # type: ignore[no-untyped-call]
        kwargs["client_options"] = {"api_endpoint": endpoint}
    client = run_v2.RevisionsClient(**kwargs)
    out: list[Revision] = []
    for rev in client.list_revisions(parent=ref.resource_name, timeout=timeout):
        ready = any(c.type_ == "Ready" and c.state.name == "CONDITION_SUCCEEDED" for c in rev.conditions)
        created = rev.create_time
        out.append(
            Revision(
                name=rev.name.rsplit("/", 1)[-1],
                create_time=datetime.fromtimestamp(created.timestamp(), UTC),
                ready=ready,
            )
        )
    return sorted(out, key=lambda r: r.create_time)


def monitoring_client(endpoint: str | None) -> Any:
    """A ``MetricServiceClient``: plaintext to ``endpoint`` (the emulator), else Google with ADC."""
    from google.cloud import monitoring_v3

    if endpoint:
        import grpc
        from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

        return monitoring_v3.MetricServiceClient(
            transport=MetricServiceGrpcTransport(channel=grpc.insecure_channel(endpoint))
        )
    return monitoring_v3.MetricServiceClient()


# --------------------------------------------------------------------------------------------
# The replay
# --------------------------------------------------------------------------------------------


def _scoped(cond: ConditionSpec, ref: ServiceRef) -> ConditionSpec:
    """The condition narrowed to one service and region (the generated filters cover a policy's whole match)."""
    extra = f' AND resource.label.service_name = "{ref.service}" AND resource.label.location = "{ref.region}"'
    return dataclasses.replace(
        cond,
        filter=cond.filter + extra,
        denominator_filter=cond.denominator_filter + extra if cond.denominator_filter else "",
    )


def _state_at(ref: ServiceRef, revisions: Sequence[Revision], at: datetime, shares: Mapping[str, int]) -> ServiceState:
    existing = tuple(r for r in revisions if r.create_time <= at)
    total = sum(shares.values())
    traffic: list[TrafficTarget] = []
    if total:
        percents = {n: math.floor(100 * c / total) for n, c in shares.items() if c}
        left = 100 - sum(percents.values())
        for name in sorted(percents, key=lambda n: -shares[n])[:left]:
            percents[name] += 1
        traffic = [TrafficTarget(kind="revision", revision=n, percent=p) for n, p in sorted(percents.items()) if p]
    return ServiceState(ref=ref, etag="backtest", traffic=tuple(traffic), revisions=existing)


def _action(decision: Decision, policy: Policy) -> str:
    if decision.reason is Reason.ROLLED_BACK:
        return "notify" if policy.mode == "notify" else "rollback"
    if decision.reason in _REFUSALS:
        return "refuse"
    return "notify"


class _Replay:
    def __init__(
        self,
        ref: ServiceRef,
        policy: Policy,
        revisions: list[Revision],
        monitoring: MonitoringApi,
        reader: Any,
        result: Backtest,
        err: TextIO,
        page_size: int,
    ) -> None:
        self.ref, self.policy, self.revisions = ref, policy, revisions
        self.enforce = policy.model_copy(update={"mode": "enforce"})
        self.monitoring, self.reader, self.result, self.err = monitoring, reader, result, err
        self.page_size = page_size
        self.ledger = Ledger()
        self.rolled_back: set[str] = set()
        bodies = [g.body for g in generate(PolicySet([policy])) if g.policy == policy.name]
        specs = [parse_policy(b) for b in bodies]
        self.evaluators = []
        for spec in specs:
            scoped = dataclasses.replace(spec, conditions=tuple(_scoped(c, ref) for c in spec.conditions))
            self.evaluators.append(PolicyEvaluator(scoped, project=ref.project))
        keep = max((c.look_back for e in self.evaluators for c in e.policy.conditions), default=MINUTE)
        self.feeds = [MinuteFeed(keep + MINUTE) for _ in self.evaluators]
        self.pending: dict[str, Found] = {}

    def run(self) -> None:
        from controller.adapters.alert_reader import read_minutes

        start, until = self.result.since, self.result.until
        chunks = math.ceil((until - start) / CHUNK)
        for index in range(chunks):
            lo = start + index * CHUNK
            hi = min(until, lo + CHUNK)
            print(f"{PROG}: reading {lo:%Y-%m-%d %H:%M}..{hi:%H:%M} ({index + 1}/{chunks})", file=self.err, flush=True)
            for evaluator, feed in zip(self.evaluators, self.feeds, strict=True):
                for cond in evaluator.policy.conditions:
                    for side in ("num", "den") if cond.is_ratio else ("num",):
                        for group, end, value in read_minutes(
                            self.reader, self.ref.project, cond, side, lo - cond.look_back, hi, page_size=self.page_size
                        ):
                            feed.add(cond.name, side, group, end, value)
                            if cond.is_ratio and side == "den" and isinstance(value, float):
                                self._hourly(group, end, float(value))
            moment = lo + MINUTE
            while moment <= hi:
                self.result.minutes += 1
                for evaluator, feed in zip(self.evaluators, self.feeds, strict=True):
                    for event in evaluate_feed(evaluator, feed, moment):
                        self._event(event.state, event.notification, moment)
                moment += MINUTE

    def _hourly(self, group: Any, end: datetime, requests: float) -> None:
        revision = dict(group).get("resource.label.revision_name", "")
        hour = end.replace(minute=0, second=0, microsecond=0)
        self.result.hourly.setdefault(revision, {}).setdefault(hour, [0.0])[0] += requests

    def _event(self, state: str, notification: dict[str, Any], at: datetime) -> None:
        alert = alert_from_incident(parse_notification(json.dumps(notification)))
        if state == "closed":
            found = self.pending.pop(alert.incident_id, None)
            if found is not None:
                found.closed_at = at
            return
        if alert.revision in self.rolled_back:
            self.result.suppressed += 1
            return
        found = self._decide(alert, at)
        self.result.incidents.append(found)
        self.pending[alert.incident_id] = found

    def _decide(self, alert: Alert, at: datetime) -> Found:
        from controller.adapters.monitoring import MonitoringUnavailable, Window, revision_window_before
        from controller.core.verify import judge, measure, trigger_window, unavailable

        trigger = alert.trigger
        assert trigger is not None
        length = trigger_window(self.policy, trigger, alert.window)
        window = Window(start=at - length, end=at)
        signal = {"error_rate": "error_rate", "latency_p95": "latency", "health": "health"}[trigger]
        evidence: dict[str, Any] = {"observed_value": alert.observed_value, "threshold_value": alert.threshold_value}
        try:
            now_numbers = self.monitoring.evidence(self.ref, window, signals=frozenset({"error_rate", signal}))
        except MonitoringUnavailable as exc:
            raise BacktestError(str(exc)) from exc
        shares = {name: n.requests for name, n in now_numbers.revisions.items()}
        state = _state_at(self.ref, self.revisions, at, shares)
        suspect = alert.revision or ""
        created = state.revision(suspect)
        if created is not None:
            evidence["deployed_at"] = created.create_time.isoformat()
            evidence["minutes_since_deploy"] = int((at - created.create_time) / MINUTE)
        evidence["deploy_nearby"] = created is not None and at - created.create_time <= DEPLOY_NEARBY
        decision = decide(alert, self.enforce, state, self.ledger, at)
        if decision.reason is Reason.ROLLED_BACK and self.policy.verification.enabled:
            suspect_m = measure(self.policy, trigger, now_numbers.get(decision.suspect), window.start, window.end)
            target_m = None
            if self.policy.verification.compare_target and decision.target and created is not None:
                before = revision_window_before(created.create_time, length)
                try:
                    then = self.monitoring.evidence(self.ref, before, signals=frozenset({signal}))
                    target_m = measure(self.policy, trigger, then.get(decision.target), before.start, before.end)
                except MonitoringUnavailable:
                    target_m = None
            verification = judge(suspect_m, target_m) if suspect_m else unavailable("no numbers")
            decision = decide(alert, self.enforce, state, self.ledger, at, verification=verification)
            evidence["verification"] = decision.evidence
        action = _action(decision, self.policy)
        if decision.reason is Reason.ROLLED_BACK and decision.ledger_after is not None:
            self.ledger = decision.ledger_after
            self.rolled_back.add(decision.suspect)
        evidence["serving_percent"] = state.percent_by_revision()
        return Found(
            opened_at=at,
            closed_at=None,
            trigger=trigger,
            suspect=decision.suspect or suspect,
            action=action,
            target=decision.target or None,
            reason=f"{decision.reason.value}: {decision.message}",
            evidence=evidence,
            incident_id=alert.incident_id,
        )


def run_backtest(
    ref: ServiceRef,
    policy: Policy,
    revisions: list[Revision],
    monitoring: MonitoringApi,
    reader: Any,
    *,
    since: datetime,
    until: datetime,
    err: TextIO | None = None,
    page_size: int = 0,
) -> Backtest:
    """Replay ``policy`` over ``(since, until]`` for ``ref`` (see the module docstring)."""
    result = Backtest(ref, since, until, policy.name, revisions=len(revisions))
    _Replay(ref, policy, revisions, monitoring, reader, result, err or sys.stderr, page_size).run()
    return result


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def render(result: Backtest) -> str:
    lines = [
        f"backtest of policy {result.policy} on {result.service}, {result.since:%Y-%m-%d %H:%M} .. "
        f"{result.until:%Y-%m-%d %H:%M} UTC ({result.revisions} revisions)",
        "",
    ]
    for i in result.incidents:
        closed = f"closed {i.closed_at:%m-%d %H:%M}" if i.closed_at else "still open"
        deploy = (
            f"deployed {i.evidence['minutes_since_deploy']} min before"
            if "minutes_since_deploy" in i.evidence
            else "deploy unknown"
        )
        target = f" to {i.target}" if i.action == "rollback" and i.target else ""
        lines.append(f"  {i.opened_at:%m-%d %H:%M} ({closed})  {i.trigger:<11} {i.suspect} ({deploy})")
        lines.append(f"      would {i.action}{target}: {i.reason}")
    s = result.summary()
    lines += [
        "",
        f"  {s['incidents']} incidents: {s['would_roll_back']} would-have rollbacks, {s['refused']} refusals, "
        f"{s['notify']} notify-only; {s['no_deploy_nearby']} with no deploy in the hour before; "
        f"{s['suppressed']} more incidents of revisions already rolled back",
    ]
    return "\n".join(lines) + "\n"


def plot(result: Backtest, path: str | Path) -> None:
    """Requests per hour per revision, with each would-be incident marked by its action."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=80)
    for revision, hours in sorted(result.hourly.items()):
        keys = sorted(hours)
        xs = [(k - result.since).total_seconds() / 86400 for k in keys]
        ax.step(xs, [hours[k][0] for k in keys], where="post", label=revision)
    colours = {"rollback": "red", "refuse": "orange", "notify": "grey"}
    for i in result.incidents:
        ax.axvline(
            (i.opened_at - result.since).total_seconds() / 86400, color=colours[i.action], linestyle="--", alpha=0.8
        )
    ax.set_ylabel("requests / hour")
    ax.set_xlabel(f"days since {result.since:%Y-%m-%d %H:%M} UTC")
    ax.set_title(
        f"backtest {result.policy} on {result.service.service}: red = would roll back, orange = refuse", fontsize=9
    )
    top = max((v[0] for hours in result.hourly.values() for v in hours.values()), default=1.0)
    ax.set_ylim(0, top * 1.6)  # room for the legend above the curves
    ax.legend(fontsize=7, loc="upper left", ncol=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def add_command(subparsers: Subparsers) -> None:
    """Register ``backtest`` on the controller's CLI."""
    parser = subparsers.add_parser(
        "backtest",
        help="replay a rollback policy over a service's Monitoring history",
        description="Read SERVICE's revisions from Cloud Run and its per-revision history from Cloud Monitoring, "
        "replay the generated alert policies and the controller's decision, and list each would-be incident. "
        "Endpoints: ROLLBACK_RUN_ENDPOINT / ROLLBACK_MONITORING_ENDPOINT (emulators), else Google with "
        "Application Default Credentials. Exit codes: 0 done, 1 Cloud Run or Monitoring unreadable, 2 usage "
        "error. See docs/backtest.md.",
    )
    parser.add_argument("service", metavar="SERVICE")
    parser.add_argument("--region", required=True, help="the service's region, e.g. europe-west1")
    parser.add_argument("--project", help="GCP project (default: $GOOGLE_CLOUD_PROJECT)")
    parser.add_argument("--since", default="7d", help="how far back, e.g. 12h, 7d (default 7d, at most 42d)")
    parser.add_argument("--policy", help="rollback policy to replay (default: the one covering the service)")
    parser.add_argument("--json", action="store_true", help="print the documented JSON document (docs/backtest.md)")
    parser.add_argument("--plot", metavar="FILE.png", help="draw traffic per revision and the incidents")
    parser.set_defaults(handler=run_command)


def _fail(err: TextIO, message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=err)
    return code


def _policy(args: argparse.Namespace, path: Path, ref: ServiceRef, err: TextIO) -> Policy | None:
    """The policy to replay (None after printing why there is none)."""
    from controller.adapters.policy_files import PolicyLoadError, load_policy_paths

    try:
        policies = load_policy_paths([path])
    except PolicyLoadError as exc:
        _fail(
            err,
            f"invalid policies at {path} ({len(exc.problems)} problems): run python -m controller validate {path}",
            0,
        )
        return None
    if args.policy:
        policy = policies.get(args.policy)
        if policy is None:
            names = ", ".join(sorted(p.name for p in policies))
            _fail(err, f"no policy named {args.policy!r} in {path} (have: {names})", 0)
        return policy
    selection = policies.select_for(ref.project, ref.region, ref.service)
    if selection.policy is None:
        _fail(err, f"no policy covers {ref}: pass --policy NAME", 0)
    return selection.policy


def run_command(
    args: argparse.Namespace,
    out: TextIO | None = None,
    err: TextIO | None = None,
    *,
    env: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> int:
    from controller.adapters.monitoring import MonitoringUnavailable
    from controller.app.settings import Settings
    from controller.app.wiring import build_monitoring_client

    out, err = out or sys.stdout, err or sys.stderr
    try:
        settings = Settings.from_env(env)
        length = parse_since(args.since)
    except ValueError as exc:
        return _fail(err, str(exc).splitlines()[0], EXIT_USAGE)
    project = args.project or settings.default_project
    if not project:
        return _fail(err, "no project: pass --project P or set GOOGLE_CLOUD_PROJECT", EXIT_USAGE)
    try:
        ref = ServiceRef(project=project, region=args.region, service=args.service)
    except ValueError:
        return _fail(err, "SERVICE, --region and --project must not be empty", EXIT_USAGE)
    policy = _policy(args, settings.policies, ref, err)
    if policy is None:
        return EXIT_USAGE
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _fail(err, "--plot needs matplotlib: pip install -r requirements-dev.txt", EXIT_USAGE)
    until = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    try:
        revisions = read_revisions(settings.run_endpoint, ref)
    except Exception as exc:
        from google.api_core import exceptions as gexc

        if isinstance(exc, gexc.NotFound):
            return _fail(err, f"{ref} not found in Cloud Run: check SERVICE, --region and --project", EXIT_USAGE)
        return _fail(
            err,
            f"cannot list revisions of {ref}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            EXIT_UNAVAILABLE,
        )
    if not revisions:
        return _fail(err, f"{ref} has no revisions (check SERVICE and --region)", EXIT_USAGE)
    print(f"{PROG}: {len(revisions)} revisions of {ref}; policy {policy.name}", file=err)
    reader = monitoring_client(settings.monitoring_endpoint)
    try:
        with build_monitoring_client(settings, deadline=30.0) as monitoring:
            result = run_backtest(
                ref, policy, revisions, monitoring, reader, since=until - length, until=until, err=err
            )
    except (BacktestError, MonitoringUnavailable) as exc:
        return _fail(err, str(exc).splitlines()[0], EXIT_UNAVAILABLE)
    except Exception as exc:
        from controller.adapters.monitoring import _is_client_error

        if not _is_client_error(exc):
            raise
        return _fail(err, f"Cloud Monitoring: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", EXIT_UNAVAILABLE)
    finally:
        reader.transport.close()
    if args.json:
        out.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        out.write(render(result))
    if args.plot:
        try:
            plot(result, args.plot)
        except OSError as exc:
            return _fail(err, f"cannot write {args.plot}: {exc.strerror}", EXIT_USAGE)
        print(f"plot written to {args.plot}", file=err)
    return EXIT_OK
