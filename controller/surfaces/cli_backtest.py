"""The ``backtest`` command: arguments, reading the service's past, and the text, JSON or plot.

``python -m controller backtest SERVICE --region R [--project P] [--since 7d] [--policy NAME]
[--json] [--plot FILE.png]`` (docs/backtest.md); the replay is ``controller.app.backtest``.
Exit codes: 0 done, 1 Cloud Run or Monitoring could not be read, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from controller.adapters.backtest_sources import monitoring_client, read_revisions
from controller.app.backtest import run_backtest
from controller.core.backtest_model import Backtest, BacktestError, parse_since
from controller.core.errors import EXIT_USAGE
from controller.core.policy import Policy
from controller.core.state import ServiceRef
from controller.surfaces.cli_common import PROG as BASE_PROG

PROG = f"{BASE_PROG} backtest"  # as invoked: rollback-controller or python -m controller

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_command", "plot", "render", "run_command"]

EXIT_OK = 0
EXIT_UNAVAILABLE = 1


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def render(result: Backtest) -> str:
    lines = [
        f"backtest of policy {result.policy} on {result.service}, {result.since:%Y-%m-%d %H:%M} .. "
        f"{result.until:%Y-%m-%d %H:%M} UTC ({result.revisions} revisions)",
        "",
    ]
    for i in result.incidents:
        closed = f"closed {i.closed_at:%m-%d %H:%M}" if i.closed_at else "still open"
        deploy = (
            f"deployed {i.evidence['minutes_since_deploy']} min before"
            if "minutes_since_deploy" in i.evidence
            else "deploy unknown"
        )
        target = f" to {i.target}" if i.action == "rollback" and i.target else ""
        lines.append(f"  {i.opened_at:%m-%d %H:%M} ({closed})  {i.trigger:<11} {i.suspect} ({deploy})")
        lines.append(f"      would {i.action}{target}: {i.reason}")
    s = result.summary()
    lines += [
        "",
        f"  {s['incidents']} incidents: {s['would_roll_back']} would-have rollbacks, {s['refused']} refusals, "
        f"{s['notify']} notify-only; {s['no_deploy_nearby']} with no deploy in the hour before; "
        f"{s['suppressed']} more incidents of revisions already rolled back",
    ]
    return "\n".join(lines) + "\n"


def plot(result: Backtest, path: str | Path) -> None:
    """Requests per hour per revision, with each would-be incident marked by its action."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=80)
    for revision, hours in sorted(result.hourly.items()):
        keys = sorted(hours)
        xs = [(k - result.since).total_seconds() / 86400 for k in keys]
        ax.step(xs, [hours[k][0] for k in keys], where="post", label=revision)
    colours = {"rollback": "red", "refuse": "orange", "notify": "grey"}
    for i in result.incidents:
        ax.axvline(
            (i.opened_at - result.since).total_seconds() / 86400, color=colours[i.action], linestyle="--", alpha=0.8
        )
    ax.set_ylabel("requests / hour")
    ax.set_xlabel(f"days since {result.since:%Y-%m-%d %H:%M} UTC")
    ax.set_title(
        f"backtest {result.policy} on {result.service.service}: red = would roll back, orange = refuse", fontsize=9
    )
    top = max((v[0] for hours in result.hourly.values() for v in hours.values()), default=1.0)
    ax.set_ylim(0, top * 1.6)  # room for the legend above the curves
    ax.legend(fontsize=7, loc="upper left", ncol=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def add_command(subparsers: Subparsers) -> None:
    """Register ``backtest`` on the controller's CLI."""
    parser = subparsers.add_parser(
        "backtest",
        help="replay a rollback policy over a service's Monitoring history",
        description="Read SERVICE's revisions from Cloud Run and its per-revision history from Cloud Monitoring, "
        "replay the generated alert policies and the controller's decision, and list each would-be incident. "
        "Endpoints: ROLLBACK_RUN_ENDPOINT / ROLLBACK_MONITORING_ENDPOINT (emulators), else Google with "
        "Application Default Credentials. Exit codes: 0 done, 1 Cloud Run or Monitoring unreadable, 2 usage "
        "error. See docs/backtest.md.",
    )
    parser.add_argument("service", metavar="SERVICE")
    parser.add_argument("--region", required=True, help="the service's region, e.g. europe-west1")
    parser.add_argument("--project", help="GCP project (default: $GOOGLE_CLOUD_PROJECT)")
    parser.add_argument("--since", default="7d", help="how far back, e.g. 12h, 7d (default 7d, at most 42d)")
    parser.add_argument("--policy", help="rollback policy to replay (default: the one covering the service)")
    parser.add_argument("--json", action="store_true", help="print the documented JSON document (docs/backtest.md)")
    parser.add_argument("--plot", metavar="FILE.png", help="draw traffic per revision and the incidents")
    parser.set_defaults(handler=run_command)


def _fail(err: TextIO, message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=err)
    return code


def _policy(args: argparse.Namespace, path: Path, ref: ServiceRef, err: TextIO) -> Policy | None:
    """The policy to replay (None after printing why there is none)."""
    from controller.adapters.policy_files import PolicyLoadError, load_policy_paths

    try:
        policies = load_policy_paths([path])
    except PolicyLoadError as exc:
        _fail(
            err,
            f"invalid policies at {path} ({len(exc.problems)} problems): run python -m controller validate {path}",
            0,
        )
        return None
    if args.policy:
        policy = policies.get(args.policy)
        if policy is None:
            names = ", ".join(sorted(p.name for p in policies))
            _fail(err, f"no policy named {args.policy!r} in {path} (have: {names})", 0)
        return policy
    selection = policies.select_for(ref.project, ref.region, ref.service)
    if selection.policy is None:
        _fail(err, f"no policy covers {ref}: pass --policy NAME", 0)
    return selection.policy


def run_command(
    args: argparse.Namespace,
    out: TextIO | None = None,
    err: TextIO | None = None,
    *,
    env: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> int:
    from controller.adapters.monitoring import MonitoringUnavailable
    from controller.app.settings import Settings
    from controller.app.wiring import build_monitoring_client

    out, err = out or sys.stdout, err or sys.stderr
    try:
        settings = Settings.from_env(env)
        length = parse_since(args.since)
    except ValueError as exc:
        return _fail(err, str(exc).splitlines()[0], EXIT_USAGE)
    project = args.project or settings.default_project
    if not project:
        return _fail(err, "no project: pass --project P or set GOOGLE_CLOUD_PROJECT", EXIT_USAGE)
    try:
        ref = ServiceRef(project=project, region=args.region, service=args.service)
    except ValueError:
        return _fail(err, "SERVICE, --region and --project must not be empty", EXIT_USAGE)
    policy = _policy(args, settings.policies, ref, err)
    if policy is None:
        return EXIT_USAGE
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _fail(err, "--plot needs matplotlib: pip install -r requirements-dev.txt", EXIT_USAGE)
    until = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    try:
        revisions = read_revisions(settings.run_endpoint, ref)
    except Exception as exc:
        from google.api_core import exceptions as gexc

        if isinstance(exc, gexc.NotFound):
            return _fail(err, f"{ref} not found in Cloud Run: check SERVICE, --region and --project", EXIT_USAGE)
        return _fail(
            err,
            f"cannot list revisions of {ref}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            EXIT_UNAVAILABLE,
        )
    if not revisions:
        return _fail(err, f"{ref} has no revisions (check SERVICE and --region)", EXIT_USAGE)
    print(f"{PROG}: {len(revisions)} revisions of {ref}; policy {policy.name}", file=err)
    reader = monitoring_client(settings.monitoring_endpoint)
    try:
        with build_monitoring_client(settings, deadline=30.0) as monitoring:
            result = run_backtest(
                ref, policy, revisions, monitoring, reader, since=until - length, until=until, err=err
            )
    except (BacktestError, MonitoringUnavailable) as exc:
        return _fail(err, str(exc).splitlines()[0], EXIT_UNAVAILABLE)
    except Exception as exc:
        from controller.adapters.monitoring import _is_client_error

        if not _is_client_error(exc):
            raise
        return _fail(err, f"Cloud Monitoring: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", EXIT_UNAVAILABLE)
    finally:
        reader.transport.close()
    if args.json:
        out.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        out.write(render(result))
    if args.plot:
        try:
            plot(result, args.plot)
        except OSError as exc:
            return _fail(err, f"cannot write {args.plot}: {exc.strerror}", EXIT_USAGE)
        print(f"plot written to {args.plot}", file=err)
    return EXIT_OK
