"""CLI for canary gating: ``python -m controller canary status | tick | gate | approve``.

The commands run :class:`controller.canary_control.CanaryControl` directly: the same state
machine, ledger and Slack thread as ``POST /canary/tick`` and ``/canary/gate``. Google credentials
come from Application Default Credentials, or the emulators are used when
``ROLLBACK_RUN_ENDPOINT`` / ``ROLLBACK_MONITORING_ENDPOINT`` are set; policies from
``ROLLBACK_POLICIES`` (default ``policies/``).

``gate`` is for CI: it ticks the service's canary once and answers with an exit code a pipeline can
branch on, so a deploy step can loop ``until`` the code is not 3:

====  =====================================================================================
exit  meaning
====  =====================================================================================
0     pass: the revision was promoted (or is the stable, last-good revision)
1     fail: the revision was rolled back and quarantined
3     inconclusive: the canary is still running (or has too little data): poll again
2     usage error (bad arguments, no project)
4     other error: service not found, no canary policy covers it, Cloud Run unavailable
====  =====================================================================================

``tick`` and ``approve`` exit 0 when done (whatever the step), 4 on errors; ``status`` likewise.
Output is a short summary, or the API's JSON with ``--json``. The JSON log line per tick goes to
standard error with ``--log-json``/``-v`` only, so standard output stays clean. Missing credentials
or an unreachable Cloud Run are errors (4, one line on stderr), never a "fail".

This module is imported by every CLI command: heavy imports live inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Final, TextIO

from controller.core.errors import EXIT_USAGE
from controller.surfaces.cli_common import PROG as BASE_PROG
from controller.surfaces.cli_common import actor as cli_actor
from controller.surfaces.cli_common import add_log_options, human_time, log_to_stderr, plain_error, settings_and_project

if TYPE_CHECKING:
    from controller.app.canary_control import CanaryControl
    from controller.app.canary_reports import CanaryReport, CanaryStatus, GateReport
    from controller.core.state import ServiceRef

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_PASS: Final = 0
EXIT_FAIL: Final = 1
EXIT_INCONCLUSIVE: Final = 3
EXIT_ERROR: Final = 4
PROG = f"{BASE_PROG} canary"


def register(subparsers: Subparsers) -> None:
    """Add ``canary`` with its sub-commands to ``python -m controller``."""
    parser = subparsers.add_parser(
        "canary",
        help="canary gating: status, tick, gate (for CI), approve",
        description="Canary promotion gating (docs/canary.md). gate exits 0 pass, 1 fail, "
        "3 inconclusive (poll again), 2 usage error, 4 other error.",
    )
    commands = parser.add_subparsers(dest="canary_command", metavar="SUBCOMMAND", required=True)

    def common(p: argparse.ArgumentParser, *, service_required: bool = True) -> None:
        if service_required:
            p.add_argument("service", metavar="SERVICE", help="Cloud Run service name")
        else:
            p.add_argument("service", metavar="SERVICE", nargs="?", default=None, help="one service (default: all)")
        p.add_argument("--region", required=service_required, default=None, help="the service's region")
        p.add_argument("--project", default=None, help="project id (default: $GOOGLE_CLOUD_PROJECT)")
        p.add_argument("--json", action="store_true", help="print the API's JSON")
        add_log_options(p)
        p.set_defaults(error_exit=EXIT_ERROR)  # no credentials, Cloud Run out of reach: "error", never "fail"

    p = commands.add_parser("status", help="the canary state in the ledger", description="Show a canary's state.")
    common(p)
    p.set_defaults(handler=_run, action="status")

    p = commands.add_parser(
        "tick",
        help="advance canaries by at most one step",
        description="Tick one service, or (without SERVICE) every service with a canary policy in --region "
        "(default: $ROLLBACK_REGIONS).",
    )
    common(p, service_required=False)
    p.set_defaults(handler=_run, action="tick")

    p = commands.add_parser(
        "gate",
        help="tick, then exit 0 pass / 1 fail / 3 inconclusive (for CI)",
        description="Tick the service's canary once and answer for --revision (default: the canary's "
        "candidate, else the newest revision). Exit 0 pass, 1 fail, 3 inconclusive, 2 usage, 4 error.",
    )
    common(p)
    p.add_argument("--revision", default="", help="the revision CI deployed (default: the candidate)")
    p.set_defaults(handler=_run, action="gate")

    p = commands.add_parser(
        "approve",
        help="allow the promotion to 100%% (policies with require_approval)",
        description="Approve the canary's last step; it happens once the step has passed. Never delays a rollback.",
    )
    common(p)
    p.add_argument("--revision", default="", help="only if this revision is the candidate in progress")
    p.add_argument("--actor", default=None, help="who approves (default: cli:$USER)")
    p.set_defaults(handler=_run, action="approve")


def _build(args: argparse.Namespace, err: TextIO) -> tuple[CanaryControl, str] | int:
    """The control and the project, or a usage exit code (the problem printed)."""
    from controller.app.wiring import build_canary_control, build_notifier

    found = settings_and_project(args, f"{PROG} {args.action}", err)
    if isinstance(found, int):
        return found
    settings, project = found
    return build_canary_control(settings, build_notifier(settings)), project


def _run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    from controller.app.canary_reports import report_json, status_json
    from controller.core.errors import ControllerError
    from controller.core.state import ServiceRef

    built = _build(args, err)
    if isinstance(built, int):
        return built
    control, project = built
    command = f"{PROG} {args.action}"
    if args.action == "tick" and not args.service and not (args.region or control.settings.regions):
        print(f"{command}: error: --region is required (ROLLBACK_REGIONS is unset)", file=err)
        return EXIT_USAGE
    ref: ServiceRef | None = None
    if args.service:
        try:
            ref = ServiceRef(project=project, region=args.region, service=args.service)
        except ValueError as exc:
            print(f"{command}: error: {exc}", file=err)
            return EXIT_USAGE
    log_to_stderr(args)
    try:
        if args.action == "gate":
            assert ref is not None
            return _gate(control, ref, args, out, err)
        if args.action == "status":
            assert ref is not None
            status = control.status(ref)
            print(json.dumps(status_json(status), indent=2) if args.json else format_status(status), file=out)
            return EXIT_PASS
        if args.action == "approve":
            assert ref is not None
            report = control.approve(ref, cli_actor(args), args.revision)
            reports = [report]
        elif ref is not None:
            reports = [control.tick(ref)]
        else:
            reports = control.tick_all(project, args.region)
    except ControllerError as exc:
        from controller.core.errors import ServiceNotFound
        from controller.surfaces.cli_manual import not_found

        message = not_found(control.run, ref) if isinstance(exc, ServiceNotFound) and ref else plain_error(str(exc))
        print(f"{command}: error: {message}", file=err)
        if args.json:
            print(json.dumps({"error": type(exc).__name__, "message": message}, indent=2), file=out)
        return EXIT_ERROR
    finally:
        close = getattr(control.monitoring, "close", None)
        if callable(close):
            close()
    if args.json:
        body = [report_json(r) for r in reports]
        print(
            json.dumps(body[0] if args.action == "approve" else {"services": body, "count": len(body)}, indent=2),
            file=out,
        )
    else:
        print("\n".join(format_report(r) for r in reports) or "no service with a canary policy", file=out)
    return EXIT_ERROR if any(r.error for r in reports) else EXIT_PASS


def _gate(control: CanaryControl, ref: ServiceRef, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``canary gate``: a revision that does not exist is an error (4), not "poll again" (3), and one
    that was rolled back and quarantined is a failure (1) that says so."""
    from controller.app.canary_reports import gate_json
    from controller.core.ledger import read_ledger

    command = f"{PROG} gate"
    before = control.run.read(ref)
    names = [r.name for r in sorted(before.revisions, key=lambda r: r.create_time, reverse=True)]
    if args.revision and args.revision not in names:
        message = f"revision {args.revision} not found in {ref.service} (revisions: {', '.join(names) or 'none'})"
        print(f"{command}: error: {message}", file=err)
        if args.json:
            print(json.dumps({"error": "revision_not_found", "message": message}, indent=2), file=out)
        return EXIT_ERROR
    gate = control.gate(ref, args.revision)
    after = control.run.read(ref)
    quarantine = next((q for q in read_ledger(after.annotations).quarantined if q.revision == gate.revision), None)
    verdict = gate.verdict.value
    if quarantine is not None and verdict != "pass":
        verdict = "fail"
        why = f": {quarantine.reason}" if quarantine.reason else ""
        note = f"{gate.revision} is quarantined since {human_time(quarantine.at)}{why}; it gets no canary traffic"
        gate = gate.model_copy(update={"message": f"{note} ({gate.message})" if gate.message else note})
    served = after.percent_by_revision().get(gate.revision, 0)
    if args.json:
        body = gate_json(gate) | {"verdict": verdict, "serving_percent": served}
        print(json.dumps(body, indent=2), file=out)
    else:
        print(format_gate(gate, verdict=verdict, served=served), file=out)
    return {"pass": EXIT_PASS, "fail": EXIT_FAIL}.get(verdict, EXIT_INCONCLUSIVE)


# --------------------------------------------------------------------------- text


def format_report(report: CanaryReport) -> str:
    head = f"{report.service}: {report.step.value}"
    if report.error:
        return f"{head}: ERROR {plain_error(report.error)}"
    lines = [f"{head}: {report.message}"]
    if report.comparison is not None:
        lines += [f"  {line}" for line in report.comparison.lines]
        lines += [f"  - {reason}" for reason in report.comparison.reasons]
    return "\n".join(lines)


def format_gate(gate: GateReport, *, verdict: str = "", served: int | None = None) -> str:
    """``PASS: rev on svc (step, serving N%)``: N is the share the revision really serves now."""
    share = f"serving {served}%" if served is not None else f"{gate.percent}%"
    head = (verdict or gate.verdict.value).upper()
    lines = [
        f"{head}: {gate.revision or '?'} on {gate.service} ({gate.step.value}, {share})",
        f"  {gate.message}",
    ]
    lines += [f"  {line}" for line in gate.evidence]
    lines += [f"  - {reason}" for reason in gate.reasons]
    return "\n".join(lines)


def format_status(status: CanaryStatus) -> str:
    from controller.core.manual_plans import describe_traffic

    cs = status.canary
    lines = [f"Service {status.service}", f"  policy:    {status.policy or '- (no canary policy)'}"]
    if status.steps:
        lines.append(f"  steps:     {'/'.join(str(s) for s in status.steps)}%")
    lines.append(f"  last good: {status.last_good or '-'}")
    if cs is None:
        lines.append("  canary:    none in progress")
    else:
        share = status.steps[cs.step] if status.steps and cs.step < len(status.steps) else "?"
        state = f"promoted at {human_time(cs.promoted_at)}" if cs.promoted_at else f"at {share}%"
        lines.append(
            f"  canary:    {cs.candidate} vs {cs.stable}, {state}, step since {human_time(cs.step_started_at)}"
        )
        if cs.approved_by:
            lines.append(f"  approved:  {cs.approved_by}")
    if status.quarantined:
        lines.append(f"  quarantined: {', '.join(status.quarantined)}")
    lines.append(f"  traffic:   {describe_traffic(status.traffic)}")
    return "\n".join(lines)
