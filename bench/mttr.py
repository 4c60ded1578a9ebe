"""Time to traffic shifted and false rollbacks: every lab scenario x every detection strategy x N seeds.

Strategies (see ``controller.lab``): ``default`` (the generated alert policies, ``for: 2m``),
``fast`` (the same with ``duration: 0s``, only the controller's evidence check as a filter),
``flagger`` (1-minute poll of the candidate, rollback after 5 failed checks) and ``crm``
(cloud-run-release-manager: 1-minute tick, 30-minute window). Every run simulates Cloud
Monitoring's sampling and 180 s ingestion lag and acts through the controller's real decision
path on the emulators. Run: ``.venv/bin/python bench/mttr.py [--seeds 10] [--markdown]``.

Columns: median and worst time from deploy to traffic shifted over the seeds that rolled back
("-" if none did), how many seeds rolled back, false rollbacks (a rollback in a scenario that
expects none, i.e. the healthy or the previous-also-bad one) and the median bad requests served
(5xx plus responses slower than the latency threshold, from the new revision).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.core.lab_scenario import STRATEGIES, LabResult  # noqa: E402
from controller.surfaces.lab import LabStack, load_scenario, quiet_logs, run_scenario, scenario_paths  # noqa: E402


def _mmss(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}m{s % 60:02d}s"


def row(name: str, strategy: str, results: list[LabResult]) -> list[str]:
    shifted = [
        float(r.figures()["time_to_traffic_shifted_s"])
        for r in results
        if r.figures()["time_to_traffic_shifted_s"] is not None
    ]
    median = _mmss(statistics.median(shifted)) if shifted else "-"
    worst = _mmss(max(shifted)) if shifted else "-"
    false = sum(1 for r in results if r.false_rollback)
    bad = statistics.median(r.bad_requests() for r in results)
    return [name, strategy, median, worst, f"{len(shifted)}/{len(results)}", str(false), f"{bad:g}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per scenario and strategy (default 10)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    header = ["scenario", "strategy", "shifted (median)", "shifted (worst)", "rolled back", "false", "bad requests"]
    rows: list[list[str]] = []
    started = time.perf_counter()
    with quiet_logs(), LabStack() as stack:
        for path in scenario_paths():
            scenario = load_scenario(path)
            for strategy in STRATEGIES:
                results = [run_scenario(stack, scenario, strategy, seed) for seed in range(1, args.seeds + 1)]
                rows.append(row(scenario.name, strategy, results))
                print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    total = len(rows) * args.seeds
    print(f"{total} simulated runs in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
