"""The ``lab`` command: run one scenario, print its timeline and figures, or draw them.

``python -m controller lab [SCENARIO.yaml] [--strategy S] [--seed N] [--json] [--plot FILE.png]``;
the simulation is ``controller.surfaces.lab``, the models ``controller.core.lab_scenario``.
Exit codes: 0 the scenario's ``expect`` happened, 1 it did not, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from controller.core.errors import EXIT_USAGE
from controller.core.lab_scenario import STRATEGIES, LabResult, ScenarioError
from controller.surfaces.cli_common import PROG as BASE_PROG
from controller.surfaces.lab import DEFAULT_SCENARIO, ROOT, LabStack, load_scenario, quiet_logs, run_scenario

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_command", "plot", "render", "run_command"]

EXIT_OK = 0
EXIT_EXPECTATION = 1  # the scenario's `expect` did not happen

PROG = f"{BASE_PROG} lab"  # as invoked: rollback-controller or python -m controller


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
