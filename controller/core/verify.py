"""Evidence before action: judge an alert's claim against measured per-revision numbers. Pure.

An alert is a claim. Before spending the one action that matters, the controller checks it:

* **Confirmed**: the suspect's own numbers over the trigger's window breach the trigger, with at
  least ``min_requests`` requests behind them. The window ends where Monitoring's data is already
  ingested (:func:`suspect_window_end`: the incident's start, or ``ingestion_lag`` before now).
* **Old deliveries** (older than ``rollback.max_alert_age``) need a confirmation by the present
  numbers; anything else becomes "not confirmed" with a notice (:func:`no_longer_confirmed`).
* **Not confirmed**: enough requests, and no breach → no rollback; Slack gets the numbers.
* **Inconclusive**: fewer than ``min_requests`` (or, for health, no per-revision probe data)
  → the policy's ``on_inconclusive`` decides (default: act on the alert alone, and say so).
* **Unavailable**: Monitoring could not be asked → ``on_unavailable`` decides (default: act).
* **Target as bad**: the target's numbers over the last trigger-length window in which it
  served (ending when the suspect started taking traffic) breach the same trigger with at
  least ``min_requests`` → do not roll back into it; escalate: the problem is probably not
  the code (a database, a downstream API).

"Breach" compares the measured point value with the threshold, exactly as the alert policy
does; the Wilson interval is shown next to 5xx ratios so a human can see how sure it is.
Precedence is written down here once: not confirmed beats target-as-bad beats the fallbacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from controller.core.alert import TriggerKind
from controller.core.formatting import percent
from controller.core.policy import Policy
from controller.core.state import Frozen

DEFAULT_HEALTH_WINDOW = timedelta(minutes=5)


class Numbers(Protocol):
    """Per-revision measurements (``controller.monitoring.RevisionNumbers`` has this shape)."""

    @property
    def revision(self) -> str: ...
    @property
    def requests(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def error_ratio(self) -> float: ...
    @property
    def error_ratio_lower(self) -> float: ...
    @property
    def error_ratio_upper(self) -> float: ...
    @property
    def latency_count(self) -> int: ...
    @property
    def p95_ms(self) -> float | None: ...
    @property
    def health_failures(self) -> int | None: ...


class Verdict(StrEnum):
    CONFIRMED = "confirmed"
    NOT_CONFIRMED = "not-confirmed"
    INCONCLUSIVE = "inconclusive"
    UNAVAILABLE = "unavailable"


class Measure(Frozen):
    """One revision's number for one trigger over one window, and what it means."""

    revision: str
    start: datetime
    end: datetime
    requests: int
    value: float | None
    threshold: float
    breached: bool | None  # None: too little data to say
    text: str  # e.g. "5xx 17.9% of 20,412 requests (95% CI 17.4-18.4%)"


class Verification(Frozen):
    verdict: Verdict
    suspect: Measure | None = None
    target: Measure | None = None
    note: str = ""

    @property
    def target_as_bad(self) -> bool:
        return self.target is not None and self.target.breached is True

    def lines(self) -> list[str]:
        """Human lines for Slack and logs: the measured values, not only the alert's claim."""
        out = []
        if self.suspect is not None:
            out.append(f"suspect {self.suspect.revision}: {self.suspect.text}")
        if self.target is not None:
            out.append(f"target {self.target.revision} when it last served: {self.target.text}")
        if self.note:
            out.append(self.note)
        return out


def trigger_window(policy: Policy, trigger: TriggerKind, alert_window: timedelta | None) -> timedelta:
    """The window a trigger is judged over: the policy's ``for`` (the alert's own as a fallback)."""
    configured = getattr(policy.triggers, trigger)
    if trigger != "health" and configured is not None:
        length: timedelta = configured.for_
        return max(length, timedelta(minutes=1))
    return max(alert_window or DEFAULT_HEALTH_WINDOW, timedelta(minutes=1))


def measure(
    policy: Policy, trigger: TriggerKind, numbers: Numbers, start: datetime, end: datetime, *, probe_data: bool = True
) -> Measure:
    """Compare one revision's numbers with the policy's trigger."""

    def result(requests: int, value: float | None, threshold: float, breached: bool | None, text: str) -> Measure:
        return Measure(
            revision=numbers.revision,
            start=start,
            end=end,
            requests=requests,
            value=value,
            threshold=threshold,
            breached=breached,
            text=text,
        )

    if trigger == "error_rate":
        rule = policy.triggers.error_rate
        assert rule is not None
        enough = numbers.requests >= max(rule.min_requests, 1)
        text = (
            f"5xx {percent(numbers.error_ratio)} of {numbers.requests:,} requests "
            f"(95% CI {percent(numbers.error_ratio_lower)}-{percent(numbers.error_ratio_upper)}; "
            f"threshold {percent(rule.above)})"
        )
        if not enough:
            text = f"only {numbers.requests:,} requests (need {rule.min_requests:,} to judge)"
        return result(
            numbers.requests,
            numbers.error_ratio if numbers.requests else None,
            rule.above,
            (numbers.error_ratio > rule.above) if enough else None,
            text,
        )
    if trigger == "latency_p95":
        latency = policy.triggers.latency_p95
        assert latency is not None
        count = numbers.latency_count
        enough = count >= max(latency.min_requests, 1) and numbers.p95_ms is not None
        p95 = numbers.p95_ms
        text = (
            f"p95 {p95:,.0f} ms over {count:,} requests (threshold {latency.above_ms:,.0f} ms)"
            if enough and p95 is not None
            else f"only {count:,} requests with latency data (need {latency.min_requests:,} to judge)"
        )
        return result(
            count, p95, latency.above_ms, (p95 > latency.above_ms) if enough and p95 is not None else None, text
        )
    health = policy.triggers.health
    assert health is not None
    failures = numbers.health_failures
    if not probe_data or failures is None:
        return result(
            0,
            None,
            health.consecutive_failures,
            None,
            "no per-revision probe data (uptime checks are not per revision)",
        )
    return result(
        failures,
        float(failures),
        health.consecutive_failures,
        failures >= health.consecutive_failures,
        f"{failures} failed health checks (threshold {health.consecutive_failures} consecutive)",
    )


def judge(suspect: Measure, target: Measure | None) -> Verification:
    """Turn measurements into a verdict (see the module docstring for the rules and precedence)."""
    if suspect.breached is False:
        return Verification(verdict=Verdict.NOT_CONFIRMED, suspect=suspect, target=target)
    verdict = Verdict.CONFIRMED if suspect.breached else Verdict.INCONCLUSIVE
    note = "" if suspect.breached else "too little traffic to confirm the alert"
    return Verification(verdict=verdict, suspect=suspect, target=target, note=note)


def unavailable(reason: str) -> Verification:
    return Verification(verdict=Verdict.UNAVAILABLE, note=f"Cloud Monitoring unavailable ({reason})")


def attribute(
    policy: Policy, trigger: TriggerKind, numbers: Sequence[Numbers], serving: list[str], start: datetime, end: datetime
) -> str | None:
    """For a service-level alert: the serving revision whose numbers breach the trigger worst."""
    worst: tuple[float, str] | None = None
    by_name = {n.revision: n for n in numbers}
    for name in serving:
        n = by_name.get(name)
        if n is None:
            continue
        m = measure(policy, trigger, n, start, end)
        if m.breached and m.value is not None:
            score = m.value / m.threshold if m.threshold else m.value
            if worst is None or score > worst[0]:
                worst = (score, name)
    return worst[1] if worst else None


# --------------------------------------------------------------------------- when to measure


def alert_age(now: datetime, started_at: datetime, published_at: datetime | None = None) -> timedelta:
    """How old an alert is: since the incident started, or since Pub/Sub first published it if
    that is earlier (a redelivery keeps its original ``publishTime``)."""
    return now - alert_since(started_at, published_at)


def alert_since(started_at: datetime, published_at: datetime | None = None) -> datetime:
    """The moment an alert's age counts from (see :func:`alert_age`)."""
    return started_at if published_at is None else min(started_at, published_at)


def suspect_window_end(now: datetime, started_at: datetime, lag: timedelta, *, stale: bool) -> datetime:
    """Where the suspect's measurement window ends.

    Cloud Run's request metrics are sampled every 60 s and may not be visible for up to 180 s, so
    a window ending *now* is mostly not ingested yet. The window ends at the incident's start (what
    Monitoring had evaluated when it opened the incident), or at ``now - lag`` if that is later; for
    an old delivery (``stale``) always at ``now - lag``: the present, as far as Monitoring shows it.
    Never after ``now``.
    """
    present = now - lag
    end = present if stale else max(started_at, present)
    return min(end, now)


def _age_text(age: timedelta) -> str:
    minutes = int(age.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} d"


def no_longer_confirmed(verification: Verification, started_at: datetime, age: timedelta) -> Verification:
    """An old alert that Cloud Monitoring's current numbers do not confirm: not acted on, with a notice."""
    when = started_at.strftime("%H:%M UTC") if age < timedelta(days=1) else started_at.strftime("%Y-%m-%d %H:%M UTC")
    note = f"alert from {when} is {_age_text(age)} old and no longer confirmed"
    if verification.note:
        note = f"{note} ({verification.note})"
    return Verification(
        verdict=Verdict.NOT_CONFIRMED, suspect=verification.suspect, target=verification.target, note=note
    )
