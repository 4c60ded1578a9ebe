"""CLI parity for manual control: ``python -m controller rollback | undo | hold | release | status``.

The commands run :class:`controller.manual.ManualControl` directly, the same engine and ledger as
the HTTP API and the Slack buttons: Google credentials through Application Default Credentials
(``gcloud auth application-default login``), or the emulator when ``ROLLBACK_RUN_ENDPOINT`` is set.
Slack is told like any manual action (``SLACK_BOT_TOKEN``/``SLACK_CHANNEL`` or ``SLACK_WEBHOOK_URL``).

Output: a readable summary and traffic table by default, ``--json`` for the API's JSON. The one
structured log line per action goes to standard error, so standard output stays clean for
``--json``; the JSON log lines only with ``--log-json``/``-v``. ``status --region R`` without a
service lists every service there. Exit codes: 0 done (or nothing to change), 1 refused by a guard,
service not found, no credentials or Cloud Run error (one line on stderr, never a traceback), 2 usage.

This module is imported by every CLI command: heavy imports live inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, TextIO

from controller.core.errors import EXIT_USAGE
from controller.surfaces.cli_common import PROG as BASE_PROG
from controller.surfaces.cli_common import (
    action_name,
    add_log_options,
    human_time,
    log_to_stderr,
    plain_error,
    settings_and_project,
)
from controller.surfaces.cli_common import actor as cli_actor

if TYPE_CHECKING:
    from controller.adapters.cloudrun import CloudRunApi
    from controller.app.manual import ManualControl
    from controller.core.manual_results import ActionResult, StatusReport
    from controller.core.state import ServiceRef, TrafficTarget

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_OK = 0
EXIT_REFUSED = 1
PROG = BASE_PROG


def _common(parser: argparse.ArgumentParser, *, acts: bool = True) -> None:
    if acts:
        parser.add_argument("service", metavar="SERVICE", help="Cloud Run service name")
    else:
        parser.add_argument(
            "service", metavar="SERVICE", nargs="?", default=None, help="one service (default: every service there)"
        )
    parser.add_argument("--region", required=True, help="the service's region, e.g. europe-west1")
    parser.add_argument("--project", default=None, help="project id (default: $GOOGLE_CLOUD_PROJECT)")
    if acts:  # only actions are attributed; reading the status is nobody's act
        parser.add_argument(
            "--actor",
            default=None,
            help="who is acting, recorded in the ledger, the log and Slack (default: cli:$USER)",
        )
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    add_log_options(parser)
    parser.set_defaults(error_exit=EXIT_REFUSED)


def register(subparsers: Subparsers) -> None:
    """Add the manual-control commands to ``python -m controller``."""
    p = subparsers.add_parser(
        "rollback",
        help="move 100%% of a service's traffic back now (quarantines the revision moved away from)",
        description="Roll back a service now: 100% of traffic to --to, or to the revision the controller "
        "would choose (last good, else the newest Ready, non-quarantined older revision). The revision "
        "moved away from is quarantined. Same guards as the HTTP API.",
    )
    _common(p)
    p.add_argument("--to", dest="to_revision", default=None, metavar="REVISION", help="target revision")
    p.add_argument("--reason", required=True, help="why (recorded with the action)")
    p.add_argument(
        "--force", action="store_true", help="allow a quarantined target, or a rollback within the cooldown of the last"
    )
    p.add_argument("--dry-run", action="store_true", help="say what would happen, change nothing")
    p.set_defaults(handler=_run, action="rollback")

    p = subparsers.add_parser(
        "undo",
        help="restore the exact traffic before the controller's last action",
        description="Undo the last action recorded in the service's ledger (an automatic or manual "
        "rollback): traffic goes back to exactly what it was, and that action's quarantine is lifted.",
    )
    _common(p)
    p.add_argument("--reason", default="", help="why (recorded with the action)")
    p.add_argument("--dry-run", action="store_true", help="say what would happen, change nothing")
    p.set_defaults(handler=_run, action="undo")

    p = subparsers.add_parser(
        "hold",
        help="pin a service: automation never changes it until released",
        description="Put a service on hold: alert-triggered rollbacks (and canary steps) leave it alone; "
        "manual actions still work.",
    )
    _common(p)
    p.add_argument("--reason", default="", help="why (shown in status and Slack)")
    p.set_defaults(handler=_run, action="hold")

    p = subparsers.add_parser("release", help="lift a hold", description="Lift the hold on a service.")
    _common(p)
    p.add_argument("--reason", default="", help="why (recorded in the log and Slack)")
    p.set_defaults(handler=_run, action="release")

    p = subparsers.add_parser(
        "status",
        help="traffic, revisions and the ledger (last action, quarantine, hold); every service without SERVICE",
        description="Show a service's traffic, its revisions with readiness, and the controller's memory. "
        "Without SERVICE: one line per service in --region (traffic, last action, canary, hold, quarantine).",
    )
    _common(p, acts=False)
    p.set_defaults(handler=_run, action="status")


# --------------------------------------------------------------------------- running


def _control(args: argparse.Namespace, err: TextIO) -> tuple[ManualControl, ServiceRef | None] | int:
    """The engine and the service to act on, or a usage exit code (the problem printed)."""
    from controller.app.wiring import build_manual_control, build_notifier
    from controller.core.state import ServiceRef

    command = f"{PROG} {args.action}"
    found = settings_and_project(args, command, err)
    if isinstance(found, int):
        return found
    settings, project = found
    try:
        ref = ServiceRef(project=project, region=args.region, service=args.service) if args.service else None
        ServiceRef(project=project, region=args.region, service="x")  # the region and project, checked
    except ValueError as exc:
        print(f"{command}: error: {exc}", file=err)
        return EXIT_USAGE
    return build_manual_control(settings, build_notifier(settings)), ref


def _act(control: ManualControl, ref: ServiceRef, args: argparse.Namespace) -> ActionResult:
    """The action through the one dispatch table: its argument model says which options it takes."""
    from controller.app.manual import ACTIONS, perform

    takes = ACTIONS[args.action].args.model_fields
    options = {name: value for name, value in vars(args).items() if name in takes}
    return perform(control, args.action, ref, **{**options, "actor": cli_actor(args)})


def _run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    from controller.app.manual import Refused
    from controller.core.errors import ControllerError, ServiceNotFound
    from controller.core.manual_results import result_json, status_json, traffic_json

    built = _control(args, err)
    if isinstance(built, int):
        return built
    control, maybe_ref = built
    log_to_stderr(args)
    command = f"{PROG} {args.action}"
    if maybe_ref is None:
        return _fleet_status(control, args, out, err)
    ref = maybe_ref
    failure: dict[str, object]
    try:
        if args.action == "status":
            report = control.status(ref)
            print(json.dumps(status_json(report), indent=2) if args.json else format_status(report), file=out)
            return EXIT_OK
        result = _act(control, ref, args)
    except Refused as exc:
        failure = {
            "error": exc.refusal.guard,
            "message": exc.refusal.message,
            "traffic": traffic_json(exc.state.traffic),
        }
        print(f"{command}: refused: {exc.refusal.message}", file=err)
    except ServiceNotFound:
        message = not_found(control.run, ref)
        failure = {"error": "service_not_found", "message": message}
        print(f"{command}: error: {message}", file=err)
    except ControllerError as exc:
        failure = {"error": type(exc).__name__, "message": plain_error(str(exc))}
        print(f"{command}: failed: {plain_error(str(exc))}", file=err)
    else:
        print(json.dumps(result_json(result), indent=2) if args.json else format_result(result), file=out)
        return EXIT_OK
    if args.json:
        print(json.dumps(failure, indent=2), file=out)
    return EXIT_REFUSED


def not_found(run: CloudRunApi, ref: ServiceRef) -> str:
    """ "checkout-api not found in acme-prod/europe-west1 (services there: cart, checkout)"."""
    from controller.core.errors import ControllerError

    where = f"{ref.project}/{ref.region}"
    try:
        names = [r.service for r in run.list_services(ref.project, ref.region)]
    except ControllerError:
        return f"{ref.service} not found in {where}"
    there = f"services there: {', '.join(names)}" if names else "no services there"
    return f"{ref.service} not found in {where} ({there})"


def _fleet_status(control: ManualControl, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``status --region R``: one line per service (traffic, last action, canary step, hold, quarantine)."""
    from controller.app.fleet import fleet_json, fleet_status, format_fleet
    from controller.core.errors import ControllerError

    command = f"{PROG} status"
    project: str = args.project or control.settings.default_project or ""
    try:
        rows = fleet_status(control.run, project, args.region)
    except ControllerError as exc:
        print(f"{command}: failed: {plain_error(str(exc))}", file=err)
        return EXIT_REFUSED
    print(json.dumps(fleet_json(rows), indent=2) if args.json else format_fleet(rows, project, args.region), file=out)
    return EXIT_REFUSED if any(r.error for r in rows) else EXIT_OK


# --------------------------------------------------------------------------- tables


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _traffic_table(traffic: tuple[TrafficTarget, ...]) -> str:
    rows = [["REVISION", "PERCENT", "TAG"]]
    rows += [[t.revision if t.kind == "revision" else "LATEST", f"{t.percent}%", t.tag or "-"] for t in traffic]
    return _table(rows)


def _where(ref: ServiceRef) -> str:
    return f"{ref.service} ({ref.project}/{ref.region})"


def format_result(result: ActionResult) -> str:
    verb = {"rollback": "Rolled back", "undo": "Undid", "hold": "Held", "release": "Released"}[result.action]
    if result.dry_run:
        head = f"DRY RUN, nothing changed: {result.action} {_where(result.service)}"
    elif not result.changed:
        head = f"Nothing to change: {result.action} {_where(result.service)}"
    else:
        head = f"{verb} {_where(result.service)}"
    lines = [head, f"  {result.message}", f"  actor: {result.actor}"]
    if not result.confirmed:
        lines.append("  WARNING: Cloud Run accepted the change but has not confirmed it yet; check status")
    if result.hold is not None:
        lines.append(f"  on hold since {human_time(result.hold.at)} by {result.hold.by}")
    lines += ["", "Traffic:", _traffic_table(result.traffic)]
    return "\n".join(lines)


def format_status(report: StatusReport) -> str:
    lines = [f"Service {_where(report.service)}"]
    if report.uri:
        lines.append(f"  url:         {report.uri}")
    hold = report.hold
    held = f"since {human_time(hold.at)} by {hold.by}" + (f" ({hold.reason})" if hold.reason else "") if hold else "no"
    lines.append(f"  on hold:     {held}")
    lines.append(f"  last good:   {report.last_good or '-'}")
    last = report.last_action
    if last is not None:
        moved = f"{last.from_revision or '?'} → {last.to_revision or '?'}"
        lines.append(f"  last action: {action_name(last.kind)} {moved} by {last.actor} at {human_time(last.at)}")
        if last.reason:
            lines.append(f"               {last.reason}")
    else:
        lines.append("  last action: -")
    for problem in report.ledger_problems:
        lines.append(f"  ledger problem: {problem}")
    lines += ["", "Traffic:", _traffic_table(report.traffic), "", "Revisions:"]
    rows = [["NAME", "READY", "TRAFFIC", "QUARANTINED", "CREATED"]]
    rows += [
        [
            r.name,
            "yes" if r.ready else "NO",
            f"{r.percent}%",
            "yes" if r.quarantined else "-",
            human_time(r.create_time),
        ]
        for r in report.revisions
    ]
    lines.append(_table(rows))
    if report.quarantined:
        lines += ["", "Quarantined:"]
        rows = [["REVISION", "SINCE", "REASON"]]
        rows += [[q.revision, human_time(q.at), q.reason or "-"] for q in report.quarantined]
        lines.append(_table(rows))
    return "\n".join(lines)
