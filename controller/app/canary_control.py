"""Orchestration of canary gating: read → evidence → judge → step → write → Slack → log.

:mod:`controller.canary` is the pure state machine; this module gives it its inputs and carries
out its decisions, the same way :mod:`controller.engine` does for alerts and
:mod:`controller.manual` for humans:

* **One write path.** Every tick goes through :func:`controller.commit.commit`: read the service,
  plan (find the canary in the ledger, measure, ``canary.tick``), write traffic and ledger in one
  UpdateService carrying the etag, and on a conflict re-read and re-plan. That is what makes two
  racing ticks safe: the loser's re-plan sees the step that just started and waits.
* **Evidence.** The window judged is ``canary_traffic.judged_window``: the whole minutes ending now inside
  ``[step start + metric_lag, now]`` (so Monitoring's 60 s buckets, aligned to the end of the read
  interval, never reach into the minute before the step). Candidate and stable are measured over the *same* window with
  one :meth:`MonitoringApi.evidence` call (5xx, latency and health together), cached per window
  for the whole tick, conflict retries included. Monitoring unavailable → the judgement is
  inconclusive with the reason: the canary holds, it is never promoted on silence (a failure
  still needs numbers, so an outage never rolls back either, unless the policy's
  ``inconclusive_timeout`` with ``on_timeout: rollback`` runs out).
* **Slack.** Every decision a human should hear about (``decision.notify``) is posted after the
  write, threaded under the canary's first message. The ts of that START message is kept in the
  ledger's canary state (``thread_ts``) by a follow-up ledger-only write through ``commit`` (the
  step itself must be written before anyone is told, and Slack must never hold up or undo a
  step, so posting first was not an option). When that follow-up loses a race or fails, later
  messages simply are not threaded; nothing else depends on it.
* **Dry run.** ``ROLLBACK_DRY_RUN=true`` or a policy in mode ``dry-run``: decisions are computed,
  logged and returned, nothing is written and Slack is not told (the state never moves, so the
  same "would start" would otherwise be posted on every tick).
* **Logs.** One JSON line per service per tick (logger ``controller.canary``), with the decision,
  the measured numbers, the window, the attempts and whether Slack was told.

Entry points: :meth:`CanaryControl.tick` (one service), :meth:`~CanaryControl.tick_all` (every
service with a canary policy in the request's or the configured projects/regions),
:meth:`~CanaryControl.gate` (tick, then the CI verdict), :meth:`~CanaryControl.status` and
:meth:`~CanaryControl.approve` (a human allows the last step).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from controller.adapters.clock import Clock, utc_now
from controller.adapters.cloudrun import CloudRunApi
from controller.adapters.monitoring import MonitoringApi, MonitoringUnavailable
from controller.adapters.policy_files import load_for_runtime
from controller.adapters.slack import Notifier
from controller.app.canary_reports import CanaryReport, CanaryStatus, GateReport, NoCanaryPolicy
from controller.app.commit import Change, commit
from controller.app.evidence_cache import EvidenceCache
from controller.app.settings import Settings
from controller.core import canary
from controller.core.canary import CanaryDecision, Step
from controller.core.canary_messages import render_canary
from controller.core.canary_traffic import judged_window
from controller.core.canary_verdict import Comparison, Verdict, compare
from controller.core.errors import ControllerError, PermanentError
from controller.core.evidence import Window
from controller.core.ledger import CanaryState, Ledger, read_ledger
from controller.core.policy import Policy
from controller.core.policy_matching import PolicySet
from controller.core.state import Frozen, ServiceRef, ServiceState

log = logging.getLogger("controller.canary")

SIGNALS = frozenset({"error_rate", "latency", "health"})


class _Planned(Frozen):
    decision: CanaryDecision
    window: Window | None = None
    evidence_error: str = ""
    thread_ts: str = ""  # the canary's Slack thread as read (before the tick)


class _Ticked(Frozen):
    report: CanaryReport
    decision: CanaryDecision
    ledger: Ledger  # after the tick (what was written, else what was read)
    state: ServiceState  # as last read


class CanaryControl:
    """Canary ticks for the services the policies gate; one per process (API) or per command (CLI)."""

    def __init__(
        self,
        run: CloudRunApi,
        monitoring: MonitoringApi | None,
        notifier: Notifier,
        policies: PolicySet | None,
        settings: Settings,
        clock: Clock = utc_now,
    ) -> None:
        self.run = run
        self.monitoring = monitoring
        self.notifier = notifier
        self.settings = settings
        self.clock = clock
        self._policies = policies

    def policies(self) -> PolicySet:
        """Loaded once per process (see ``policy.load_for_runtime`` for what invalid files do)."""
        if self._policies is None:
            self._policies = load_for_runtime(self.settings.policies)
        return self._policies

    def policy_for(self, ref: ServiceRef) -> Policy | None:
        """The service's policy if it has a canary block, else None."""
        policy = self.policies().select_for(ref.project, ref.region, ref.service).policy
        return policy if policy is not None and policy.canary is not None else None

    # -- entry points ---------------------------------------------------------------------------
    def tick(self, ref: ServiceRef, *, approved_by: str = "") -> CanaryReport:
        """Advance the canary of one service by at most one step."""
        return self._tick(ref, approved_by=approved_by).report

    def tick_all(self, project: str | None = None, region: str | None = None) -> list[CanaryReport]:
        """Tick every service with a canary policy in ``project`` (default GOOGLE_CLOUD_PROJECT) and
        ``region`` (default: every region in ROLLBACK_REGIONS). A failing service is reported with
        its error and does not stop the others; listing a region that fails raises."""
        project = project or self.settings.default_project
        regions = (region,) if region else self.settings.regions
        if not project:
            raise PermanentError("no project: name one, or set GOOGLE_CLOUD_PROJECT")
        if not regions:
            raise PermanentError("no region: name one, or set ROLLBACK_REGIONS (comma-separated)")
        reports: list[CanaryReport] = []
        for where in regions:
            for ref in self.run.list_services(project, where):
                if self.policy_for(ref) is None:
                    continue
                try:
                    reports.append(self.tick(ref))
                except Exception as exc:  # one service's failure, even a bug, never stops the others
                    if not isinstance(exc, ControllerError):
                        log.exception("canary tick of %s failed unexpectedly", ref)
                    reports.append(CanaryReport(service=ref, error=f"{type(exc).__name__}: {exc}"))
        return reports

    def gate(self, ref: ServiceRef, revision: str = "") -> GateReport:
        """Tick, then the verdict CI waits for (``canary.gate``). ``revision`` defaults to the canary's
        candidate, else the newest revision of the service (the one a pipeline just deployed)."""
        if self.policy_for(ref) is None:
            raise NoCanaryPolicy(f"no policy with a canary block covers {ref}: a gate would never pass")
        done = self._tick(ref)
        decision, cs = done.decision, done.ledger.canary
        name = revision or decision.candidate or (cs.candidate if cs else "")
        if not name and done.state.revisions:
            name = max(done.state.revisions, key=lambda r: r.create_time).name
        verdict = canary.gate(decision, done.ledger, name)
        comparison = decision.comparison
        return GateReport(
            verdict=verdict,
            step=decision.step,
            percent=decision.percent,
            candidate=decision.candidate or (cs.candidate if cs else ""),
            stable=decision.stable or (cs.stable if cs else ""),
            revision=name,
            evidence=comparison.lines if comparison else (),
            reasons=comparison.reasons if comparison else (),
            message=decision.message,
            service=ref,
        )

    def approve(self, ref: ServiceRef, actor: str, candidate: str = "") -> CanaryReport:
        """A human allows the promotion to 100%. If the tick cannot promote yet (the step is not over
        or not judged yet), the approval is recorded in the canary state and used when it can.
        ``candidate`` (the Slack button sends it) must be the canary in progress: a button on an
        old message never approves a newer revision."""
        if candidate:
            current = read_ledger(self.run.read(ref).annotations).canary
            if current is None or current.candidate != candidate or current.promoted_at is not None:
                now = current.candidate if current and current.promoted_at is None else "none"
                message = f"nothing to approve: {candidate} is not the canary in progress (in progress: {now})"
                return CanaryReport(service=ref, message=message, canary=current)
        done = self._tick(ref, approved_by=actor)
        if done.decision.step in (Step.PROMOTE, Step.ROLLBACK) or done.report.dry_run:
            return done.report
        cs = done.ledger.canary
        if cs is None or cs.promoted_at is not None:
            return done.report.model_copy(update={"message": f"nothing to approve: {done.report.message}"})
        candidate = cs.candidate

        def plan(state: ServiceState, ledger: Ledger) -> tuple[bool, Change | None]:
            now_cs = ledger.canary
            if now_cs is None or now_cs.candidate != candidate or now_cs.promoted_at is not None:
                return False, None
            if now_cs.approved_by:
                return True, None
            kept = ledger.model_copy(update={"canary": now_cs.model_copy(update={"approved_by": actor})})
            return True, Change(state.traffic, kept)

        recorded = commit(self.run, ref, plan, retries=self.settings.conflict_retries)
        after: CanaryState | None = cs
        if recorded.applied is not None:
            after = read_ledger(recorded.applied.state.annotations).canary
        message = f"promotion of {candidate} approved by {actor}; it happens once the step passes"
        message += f" ({done.report.message})"
        return done.report.model_copy(update={"message": message, "canary": after})

    def status(self, ref: ServiceRef) -> CanaryStatus:
        state = self.run.read(ref)
        ledger = read_ledger(state.annotations)
        policy = self.policy_for(ref)
        return CanaryStatus(
            service=ref,
            policy=policy.name if policy else "",
            steps=tuple(policy.canary.steps) if policy and policy.canary else (),
            canary=ledger.canary,
            last_good=ledger.last_good,
            quarantined=tuple(q.revision for q in ledger.quarantined),
            traffic=state.traffic,
        )

    # -- the one path every tick takes ------------------------------------------------------------
    def _tick(self, ref: ServiceRef, *, approved_by: str = "") -> _Ticked:
        started = time.perf_counter()
        policy = self.policy_for(ref)
        if policy is None or policy.canary is None:
            state = self.run.read(ref)  # an unknown service is still an error (404), not "nothing to do"
            decision = CanaryDecision(step=Step.NONE, message=f"no policy with a canary block covers {ref}")
            report = CanaryReport(service=ref, message=decision.message, traffic=state.traffic)
            self._log(logging.INFO, report, started)
            return _Ticked(report=report, decision=decision, ledger=read_ledger(state.annotations), state=state)
        cfg = policy.canary
        dry_run = self.settings.dry_run or policy.mode == "dry-run"
        evidence = EvidenceCache(self.monitoring, ref)

        def plan(state: ServiceState, ledger: Ledger) -> tuple[_Planned, Change | None]:
            now = self.clock()
            cs = ledger.canary
            comparison: Comparison | None = None
            span: Window | None = None
            if cs is not None and cs.promoted_at is None and (bounds := judged_window(cs, cfg, now)) is not None:
                span = Window(start=bounds[0], end=bounds[1])
                try:
                    found = evidence.get(span, SIGNALS)
                except MonitoringUnavailable as exc:
                    # Never promote (nor fail) without numbers: inconclusive, with the reason.
                    comparison = Comparison(
                        judgement=Verdict.INCONCLUSIVE, reasons=(f"Cloud Monitoring unavailable: {exc}",)
                    )
                else:
                    comparison = compare(cfg, policy.triggers, found.get(cs.candidate), found.get(cs.stable))
            decision = canary.tick(state, ledger, policy, now, comparison, approved_by=approved_by)
            planned = _Planned(
                decision=decision, window=span, evidence_error=evidence.failure, thread_ts=cs.thread_ts if cs else ""
            )
            if dry_run or not decision.writes or decision.ledger_after is None:
                return planned, None
            return planned, Change(decision.traffic_after, decision.ledger_after)

        try:
            done = commit(self.run, ref, plan, retries=self.settings.conflict_retries)
        except ControllerError as exc:
            error = f"{type(exc).__name__}: {exc}"
            failed = CanaryReport(service=ref, policy=policy.name, dry_run=dry_run, error=error)
            self._log(logging.ERROR, failed, started)
            raise
        planned, applied = done.outcome, done.applied
        decision = planned.decision
        after_state = applied.state if applied else done.state
        ledger = decision.ledger_after if applied and decision.ledger_after else read_ledger(done.state.annotations)
        report = CanaryReport(
            service=ref,
            policy=policy.name,
            step=decision.step,
            message=decision.message if not dry_run or not decision.writes else f"would have: {decision.message}",
            candidate=decision.candidate,
            stable=decision.stable,
            percent=decision.percent,
            comparison=decision.comparison,
            window=planned.window,
            changed=applied is not None,
            confirmed=applied.confirmed if applied else True,
            dry_run=dry_run,
            attempts=done.attempts,
            traffic=after_state.traffic,
            canary=ledger.canary,
        )
        if applied is not None and decision.notify:
            report, ledger = self._notify(ref, policy, decision, planned.thread_ts, report, ledger)
        self._log(logging.INFO if report.confirmed else logging.WARNING, report, started, planned.evidence_error)
        return _Ticked(report=report, decision=decision, ledger=ledger, state=after_state)

    # -- Slack ---------------------------------------------------------------------------------
    def _notify(
        self,
        ref: ServiceRef,
        policy: Policy,
        decision: CanaryDecision,
        thread_ts: str,
        report: CanaryReport,
        ledger: Ledger,
    ) -> tuple[CanaryReport, Ledger]:
        message = render_canary(
            ref, decision, policy=policy.name, channel=policy.notify.slack_channel, confirmed=report.confirmed
        )
        starts_thread = decision.step is Step.START
        ts = self.notifier.post_in_thread(message, None if starts_thread else (thread_ts or None))
        # post_in_thread gives None both for a failure and for transports without a ts (webhooks);
        # those log their failures themselves.
        report = report.model_copy(update={"notified": ts is not None})
        if starts_thread and ts:
            ledger = self._remember_thread(ref, decision, ts, ledger)
            report = report.model_copy(update={"canary": ledger.canary})
        return report, ledger

    def _remember_thread(self, ref: ServiceRef, decision: CanaryDecision, ts: str, ledger: Ledger) -> Ledger:
        """Store the START message's ts in the canary state (a ledger-only write); best effort."""
        started = decision.ledger_after.canary if decision.ledger_after else None

        def plan(state: ServiceState, now_ledger: Ledger) -> tuple[Ledger | None, Change | None]:
            cs = now_ledger.canary
            # Only the canary this message started: a newer tick may have moved on already.
            if cs is None or started is None or (cs.candidate, cs.stable) != (started.candidate, started.stable):
                return None, None
            if cs.thread_ts:
                return now_ledger, None
            kept = now_ledger.model_copy(update={"canary": cs.model_copy(update={"thread_ts": ts})})
            return kept, Change(state.traffic, kept)

        try:
            done = commit(self.run, ref, plan, retries=self.settings.conflict_retries)
        except ControllerError as exc:
            log.warning(
                "canary: could not record the Slack thread; later messages will not be threaded",
                extra={"fields": {"event": "canary", "service": ref.model_dump(), "error": str(exc)}},
            )
            return ledger
        return done.outcome or ledger

    # -- logging -------------------------------------------------------------------------------
    def _log(self, level: int, report: CanaryReport, started: float, evidence_error: str = "") -> None:
        payload: dict[str, Any] = {
            "event": "canary",
            **report.model_dump(mode="json", exclude={"service"}),
            "service": report.service.model_dump(),
            "evidence_error": evidence_error,
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        labels = {"service": str(report.service), "step": report.step.value}
        text = f"canary {report.service}: {report.step.value}: {report.error or report.message}"
        log.log(level, text, extra={"fields": payload, "labels": labels})
