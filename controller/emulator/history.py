"""Seed the emulators with a week of history to backtest (``controller.backtest``).

:func:`seed_week` writes seven days of per-minute Cloud Run metrics for one service into the
Monitoring emulator (with ``controller.emulator.traffic.TrafficSimulator``) and its revisions into
the Cloud Run emulator, following :data:`WEEK`: healthy deploys, a deploy made two minutes into a
shared-database outage (so the previous revision was as bad when it last served), and a bad
deploy (18% 5xx) that a human rolled back after 45 minutes. The returned :class:`Seeded` says
what a backtest should find. docs/backtest.md shows how to run it::

    python -m controller.emulator.history      # serves both emulators seeded, prints the env to use

Not imported by the Cloud Function.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.emulator.cloudrun import CloudRunEmulator
    from controller.emulator.monitoring import MonitoringEmulator

__all__ = ["Seeded", "main", "seed_week"]

GOOD = (0.005, 120.0)
BAD = (0.18, 120.0)


@dataclass(frozen=True)
class Deploy:
    revision: str
    at: datetime
    expect: str  # "rollback" | "refuse" | "none"
    note: str


@dataclass(frozen=True)
class Seeded:
    project: str
    region: str
    service: str
    since: datetime
    until: datetime
    deploys: tuple[Deploy, ...]


def seed_week(
    run: CloudRunEmulator,
    monitoring: MonitoringEmulator,
    *,
    until: datetime,
    project: str = "demo-proj",
    region: str = "us-central1",
    service: str = "checkout",
    requests_per_minute: int = 100,
    seed: int = 1,
) -> Seeded:
    """Seven days ending ``until`` (a whole minute), see the module docstring."""
    from controller.emulator.cloudrun import RevisionSpec
    from controller.emulator.traffic import RevisionProfile, TrafficSimulator

    until = until.replace(second=0, microsecond=0)
    since = until - timedelta(days=7)
    day = since.replace(hour=0, minute=0) + timedelta(days=1)
    names = [f"{service}-0000{i}-{s}" for i, s in enumerate(("abc", "def", "ghi", "jkl", "mno", "pqr"), start=1)]
    healthy1 = Deploy(names[1], day + timedelta(hours=10), "none", "healthy deploy")
    outage = Deploy(
        names[2],
        day + timedelta(days=1, hours=14),
        "refuse",
        "deployed two minutes into a shared-database outage: the previous revision was as bad",
    )
    bad = Deploy(
        names[3], day + timedelta(days=3, hours=11), "rollback", "bad deploy: 18% 5xx, rolled back by hand after 45 min"
    )
    healthy2 = Deploy(names[4], day + timedelta(days=5, hours=9, minutes=30), "none", "healthy deploy")

    run.add_service(
        project,
        region,
        service,
        revisions=[RevisionSpec(name=names[0], create_time=since - timedelta(days=1))],
        traffic=[{"type": "REVISION", "revision": names[0], "percent": 100}],
    )
    sim = TrafficSimulator(
        run,
        monitoring,
        project=project,
        region=region,
        service=service,
        requests_per_minute=requests_per_minute,
        seed=seed,
        start=since,
    )

    def profile(name: str, behaviour: tuple[float, float]) -> None:
        sim.set_profile(name, RevisionProfile(error_rate=behaviour[0], latency_ms=behaviour[1]))

    def deploy(d: Deploy, behaviour: tuple[float, float]) -> None:
        sim.run_until(d.at)
        run.add_revision(project, region, service, RevisionSpec(name=d.revision, create_time=d.at))
        profile(d.revision, behaviour)
        run.set_traffic(project, region, service, [{"type": "REVISION", "revision": d.revision, "percent": 100}])

    for name in names:
        profile(name, GOOD)
    deploy(healthy1, GOOD)
    # The outage: the serving revision fails from two minutes before the deploy, the new one too,
    # for 30 minutes; then the database recovers and both are healthy.
    sim.run_until(outage.at - timedelta(minutes=2))
    profile(healthy1.revision, BAD)
    deploy(outage, BAD)
    profile(healthy1.revision, GOOD)
    sim.run_until(outage.at + timedelta(minutes=30))
    profile(outage.revision, GOOD)
    deploy(bad, BAD)
    sim.run_until(bad.at + timedelta(minutes=45))
    run.set_traffic(project, region, service, [{"type": "REVISION", "revision": outage.revision, "percent": 100}])
    deploy(healthy2, GOOD)
    sim.run_until(until)
    return Seeded(project, region, service, since, until, (healthy1, outage, bad, healthy2))


def main() -> int:
    """Serve both emulators seeded with a week ending now; print the environment for ``backtest``."""
    from controller.emulator.cloudrun import CloudRunEmulator
    from controller.emulator.monitoring import MonitoringEmulator

    with CloudRunEmulator() as run, MonitoringEmulator() as monitoring:
        seeded = seed_week(run, monitoring, until=datetime.now(UTC))
        print(f"export ROLLBACK_RUN_ENDPOINT={run.url}")
        print(f"export ROLLBACK_MONITORING_ENDPOINT={monitoring.target}")
        where = f"{seeded.service} --region {seeded.region} --project {seeded.project}"
        print(f"python -m controller backtest {where} --since 7d")
        for d in seeded.deploys:
            print(f"# {d.at:%a %H:%M} {d.revision}: {d.note} (a backtest should say: {d.expect})")
        sys.stdout.flush()
        print("# serving until Ctrl-C", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
