"""Which revisions a canary compares, the traffic split it writes, and the window it judges.

Candidate and stable
    stable    = the ledger's last-good revision if Ready and not quarantined. With no memory
                yet, the revision serving the largest share: the first tick only records it as
                last-good (``adopt``, a ledger-only write; nothing moves), because without memory
                a fresh deploy cannot be told from a revision that has served production for weeks.
    candidate = the newest Ready, non-quarantined revision created after stable that someone
                chose deliberately (``is_deliberate``): tagged ``candidate`` (``--no-traffic --tag
                candidate``), or given traffic by a deploy (caught: the first step takes that
                traffic back to the first step's share). A ``--tag pr-123`` preview is not one;
                the policy's ``candidates: any`` makes every newer Ready revision one.
    An undo (``controller.manual``) makes the restored revision last-good, i.e. stable: no
    canary is started on what a human just said is fine.

Each step lasts ``step_for`` from its traffic change. Its first ``metric_lag`` is ignored while
metrics catch up; the range judged is ``[step start + metric_lag, now]``, read as the whole
minutes of it ending now (``judged_window``).
No clock and no I/O here: ``now`` is an argument.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from controller.core.ledger import CanaryState, Ledger
from controller.core.policy import Canary
from controller.core.state import ServiceState, TrafficTarget

TAG_STABLE, TAG_CANDIDATE, TAG_PREVIOUS = "stable", "candidate", "previous"
_OUR_TAGS = frozenset({TAG_STABLE, TAG_CANDIDATE, TAG_PREVIOUS})
MINUTE = timedelta(minutes=1)
Candidates = Literal["tagged", "any"]


def find_stable(state: ServiceState, ledger: Ledger) -> str:
    """The ledger's last-good revision if usable; with no memory yet, the revision with the largest share."""
    last_good = state.revision(ledger.last_good) if ledger.last_good else None
    if last_good is not None and last_good.ready and not ledger.is_quarantined(last_good.name):
        return last_good.name
    serving = state.percent_by_revision()
    usable = [n for n in state.serving() if (r := state.revision(n)) and r.ready and not ledger.is_quarantined(n)]
    return max(usable, key=lambda n: serving[n]) if usable else ""


def is_deliberate(state: ServiceState, name: str) -> bool:
    """A revision someone meant for production: tagged ``candidate``, or given traffic by a deploy."""
    tagged = any(t.kind == "revision" and t.revision == name and t.tag == TAG_CANDIDATE for t in state.traffic)
    return tagged or state.percent_by_revision().get(name, 0) > 0


def find_pair(state: ServiceState, ledger: Ledger, candidates: Candidates = "tagged") -> tuple[str, str] | None:
    """(candidate, stable), or None. The candidate is the newest Ready, non-quarantined revision
    created after stable that was chosen deliberately (``is_deliberate``); with ``candidates:
    any``, any such revision (a ``--no-traffic --tag pr-123`` preview included)."""
    stable = find_stable(state, ledger)
    anchor = state.revision(stable) if stable else None
    if anchor is None:
        return None
    newer = [
        r
        for r in state.revisions
        if r.ready
        and not ledger.is_quarantined(r.name)
        and r.create_time > anchor.create_time
        and (candidates == "any" or is_deliberate(state, r.name))
    ]
    if not newer:
        return None
    return max(newer, key=lambda r: r.create_time).name, stable


def split(state: ServiceState, candidate: str, stable: str, percent: int) -> tuple[TrafficTarget, ...]:
    """Candidate at ``percent`` (tag ``candidate``), stable at the rest (tag ``stable``); at 100% the
    candidate becomes ``stable`` and the old stable keeps a ``previous`` tag at 0%. Other tagged
    entries are kept at 0% so their URLs survive."""
    out: list[TrafficTarget] = []
    if percent >= 100:
        out.append(TrafficTarget(kind="revision", revision=candidate, percent=100, tag=TAG_STABLE))
        out.append(TrafficTarget(kind="revision", revision=stable, percent=0, tag=TAG_PREVIOUS))
    elif percent <= 0:
        out.append(TrafficTarget(kind="revision", revision=stable, percent=100, tag=TAG_STABLE))
        out.append(TrafficTarget(kind="revision", revision=candidate, percent=0, tag=TAG_CANDIDATE))
    else:
        out.append(TrafficTarget(kind="revision", revision=stable, percent=100 - percent, tag=TAG_STABLE))
        out.append(TrafficTarget(kind="revision", revision=candidate, percent=percent, tag=TAG_CANDIDATE))
    ours = {candidate, stable}
    for t in state.traffic:
        if t.tag and t.tag not in _OUR_TAGS and not (t.kind == "revision" and t.revision in ours):
            out.append(t.model_copy(update={"percent": 0}))
    return tuple(out)


def window(cs: CanaryState, cfg: Canary, now: datetime) -> tuple[datetime, datetime] | None:
    """The documented range for the current step, ``[step start + metric_lag, now]``, or None
    while it holds less than one minute."""
    start = cs.step_started_at + cfg.metric_lag
    return (start, now) if now - start >= MINUTE else None


def judged_window(cs: CanaryState, cfg: Canary, now: datetime) -> tuple[datetime, datetime] | None:
    """The window actually measured: the whole minutes ending ``now`` that lie inside ``window``.

    Monitoring aligns its buckets to the end of the read interval, in periods of at least 60 s; a
    65 s range would be read as a 120 s bucket reaching into the minute before the step. Whole
    minutes ending now are exactly the 60 s buckets inside the range; the leftover (under a
    minute, at the start) is not judged.
    """
    span = window(cs, cfg, now)
    if span is None:
        return None
    minutes = int((now - span[0]) // MINUTE)
    return now - minutes * MINUTE, now


def current_share(steps: list[int], cs: CanaryState, state: ServiceState) -> int:
    """The candidate's share as last written (see ``CanaryState.percent``)."""
    if cs.percent:
        return cs.percent
    if 0 <= cs.step < len(steps):
        return steps[cs.step]
    return state.percent_by_revision().get(cs.candidate, 0)


def placement(steps: list[int], cs: CanaryState, state: ServiceState) -> tuple[int, int]:
    """(step index, share) where a canary continues under the policy's steps as they are now.

    The share is the one last written (``cs.percent``; for older states ``steps[step]``, or the
    candidate's live share when that index no longer exists). It continues at the first step at
    or above that share, except that 100% is never reached without a pass: then it keeps its
    share and the next pass promotes (index one before the last step)."""
    share = current_share(steps, cs, state)
    index = next(i for i, p in enumerate(steps) if p >= share)  # the last step is 100
    if steps[index] == share or steps[index] < 100:
        return index, steps[index]
    return index - 1, share
