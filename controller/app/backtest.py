"""Backtest a rollback policy on history: what would the controller have done last week?

``python -m controller backtest SERVICE --region R [--project P] [--since 7d] [--policy NAME]
[--json] [--plot FILE.png]`` reads the service's revisions (create times) from Cloud Run and its
per-revision history from Cloud Monitoring, replays the alert policies ``alert-policies``
generates for the rollback policy through ``controller.core.evaluator``, minute by minute, and at each
would-be incident asks the controller's decision (``controller.core.decide.decide``, with the evidence
check of ``controller.verify`` on the same history) what it would have done. docs/backtest.md
documents the output, including the stable ``--json`` document (:data:`JSON_SHAPE`).

The pieces: results and the pure steps in ``controller.core.backtest_model``, the readers in
``controller.adapters.backtest_sources``, the command, text and plot in
``controller.surfaces.cli_backtest``; this module is the replay that joins them.

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

import dataclasses
import json
import math
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from controller.core.alert import Alert, alert_from_incident
from controller.core.alertpolicies import generate
from controller.core.alertpolicy_spec import parse_policy
from controller.core.backtest_model import (
    CHUNK,
    DEPLOY_NEARBY,
    MINUTE,
    Backtest,
    BacktestError,
    Found,
    action_for,
    scoped_condition,
    state_at,
)
from controller.core.decide import Reason, decide
from controller.core.evaluator import PolicyEvaluator, evaluate_feed
from controller.core.incident import parse_notification
from controller.core.ledger import Ledger
from controller.core.policy import Policy
from controller.core.policy_matching import PolicySet
from controller.core.series_values import MinuteFeed
from controller.core.state import Revision, ServiceRef

if TYPE_CHECKING:
    from controller.adapters.monitoring import MonitoringApi

__all__ = ["PROG", "run_backtest"]

PROG = "backtest"  # progress lines on stderr; the CLI names itself in its own errors


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
            scoped = dataclasses.replace(spec, conditions=tuple(scoped_condition(c, ref) for c in spec.conditions))
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
        from controller.adapters.monitoring import MonitoringUnavailable
        from controller.core.evidence import Window, revision_window_before
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
        state = state_at(self.ref, self.revisions, at, shares)
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
        action = action_for(decision, self.policy)
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
