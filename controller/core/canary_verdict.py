"""The canary's judgement: candidate against stable over the same window, and the one verdict enum.

Judgement, candidate against stable over that window (``compare``); precedence is written
down once: **fail beats inconclusive beats pass**.
    fail          5xx: the candidate's Wilson lower bound is above stable's ratio plus
                  ``max_error_rate_increase``, or above the policy's absolute 5xx threshold;
                  p95: candidate/stable above ``max_latency_ratio``, or above the absolute
                  p95 threshold; health: probe failures at the health trigger's count.
    inconclusive  fewer than ``min_requests`` candidate requests (never promote on silence),
                  no latency data, or a 5xx ratio above the limit that is not yet significant.
    pass          otherwise.

``Verdict`` is also the answer the CI gate gives (``controller.core.canary.gate``): the same three
wire strings, ``pass``, ``fail`` and ``inconclusive``.
No clock and no I/O here: the numbers are arguments.
"""

from __future__ import annotations

from enum import StrEnum

from controller.core.formatting import percent
from controller.core.policy import Canary, Triggers
from controller.core.state import Frozen
from controller.core.verify import Numbers


class Verdict(StrEnum):
    """A canary comparison's judgement, and the CI gate's answer (the wire strings never change)."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class Comparison(Frozen):
    judgement: Verdict
    reasons: tuple[str, ...] = ()  # why it failed / is inconclusive
    lines: tuple[str, ...] = ()  # the measured numbers, for Slack and CI


def compare(cfg: Canary, triggers: Triggers, candidate: Numbers, stable: Numbers) -> Comparison:
    """Candidate against stable over the same window (module docstring: rules and precedence)."""
    fails: list[str] = []
    unsure: list[str] = []
    lines: list[str] = []
    need = max(cfg.min_requests, 1)

    if candidate.requests < need:
        unsure.append(f"only {candidate.requests:,} candidate requests in the window (need {need:,})")
    else:
        lines.append(
            f"5xx: candidate {percent(candidate.error_ratio)} of {candidate.requests:,} "
            f"(95% CI {percent(candidate.error_ratio_lower)}-{percent(candidate.error_ratio_upper)}), "
            f"stable {percent(stable.error_ratio)} of {stable.requests:,}"
        )
        limit = stable.error_ratio + cfg.max_error_rate_increase if stable.requests >= need else None
        absolute = triggers.error_rate.above if triggers.error_rate else None
        if limit is not None and candidate.error_ratio_lower > limit:
            fails.append(
                f"5xx ratio {percent(candidate.error_ratio)} is significantly above stable's "
                f"{percent(stable.error_ratio)} + {percent(cfg.max_error_rate_increase)} allowed"
            )
        elif absolute is not None and candidate.error_ratio_lower > absolute:
            fails.append(f"5xx ratio {percent(candidate.error_ratio)} is above the policy's {percent(absolute)}")
        elif limit is not None and candidate.error_ratio > limit:
            unsure.append(f"5xx ratio {percent(candidate.error_ratio)} is above the limit but not yet significantly")

        c95 = candidate.p95_ms
        if candidate.latency_count < need or c95 is None:
            unsure.append("no latency data for the candidate")
        else:
            s95 = stable.p95_ms if stable.latency_count >= need else None
            lines.append(f"p95: candidate {c95:,.0f} ms, stable " + (f"{s95:,.0f} ms" if s95 else "n/a"))
            if s95 and c95 / s95 > cfg.max_latency_ratio:
                fails.append(
                    f"p95 {c95:,.0f} ms is {c95 / s95:.2f}x stable's {s95:,.0f} ms (allowed {cfg.max_latency_ratio}x)"
                )
            elif triggers.latency_p95 is not None and c95 > triggers.latency_p95.above_ms:
                fails.append(f"p95 {c95:,.0f} ms is above the policy's {triggers.latency_p95.above_ms:,.0f} ms")

    failures = candidate.health_failures
    if triggers.health is not None and failures is not None:
        lines.append(f"health: {failures} failed probes")
        if failures >= triggers.health.consecutive_failures:
            fails.append(f"{failures} failed health checks (threshold {triggers.health.consecutive_failures})")

    if fails:
        return Comparison(judgement=Verdict.FAIL, reasons=tuple(fails), lines=tuple(lines))
    if unsure:
        return Comparison(judgement=Verdict.INCONCLUSIVE, reasons=tuple(unsure), lines=tuple(lines))
    return Comparison(judgement=Verdict.PASS, lines=tuple(lines))
