"""What the health trigger can see of a revision's probes. Pure.

The health trigger counts failed probe attempts (``container/completed_probe_attempt_count``).
Cloud Run runs a *startup* probe only while an instance starts; only a *liveness* probe keeps
checking a running instance. A service deployed with defaults has just a TCP startup probe
(period 240 s) and no liveness probe (Cloud Run docs, "Configure container health checks for
services"), so a revision that starts and then misbehaves never fails a probe the trigger sees.
The adapter reads the periods from the revision's containers; this module says what they mean.
"""

from __future__ import annotations

from datetime import timedelta

from controller.core.state import Revision

DEFAULT_STARTUP_PERIOD = timedelta(seconds=240)  # Cloud Run's default TCP startup probe


def liveness_period(revision: Revision | None) -> timedelta | None:
    """The period of the revision's liveness probe, or None when it has none (or is unknown)."""
    if revision is None or revision.liveness_period <= 0:
        return None
    return timedelta(seconds=revision.liveness_period)


def blind_spot(revision: Revision) -> str:
    """Why the health trigger cannot judge ``revision`` ("" when it has a liveness probe)."""
    if liveness_period(revision) is not None:
        return ""
    startup = f"a startup probe every {revision.startup_period}s" if revision.startup_period > 0 else "no startup probe"
    return (
        f"{revision.name} has no liveness probe ({startup}, which runs only while an instance starts), "
        "so probe failures say nothing about a running instance: health verification skipped"
    )
