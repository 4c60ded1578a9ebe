"""The ``alert-policies`` command: load the rollback policies, generate, print or write the files.

``python -m controller alert-policies [PATHS] [--channel NAME] [--probe-period S|none]
[--output-dir DIR] [--format json|terraform]``: the generation itself is pure and lives in
``controller.core.alertpolicies`` (docs/alert-policies.md). Exit codes: 0 done, 1 invalid
policies, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from controller.adapters.policy_files import PolicyLoadError, load_policy_paths
from controller.app.settings import policies_from_env
from controller.core.alertpolicies import (
    CHANNEL_PLACEHOLDER,
    AlertPolicyError,
    GeneratedAlertPolicy,
    check_channel,
    generate,
)
from controller.core.alertpolicy_terraform import FILENAME, dumps, to_terraform
from controller.core.errors import EXIT_USAGE
from controller.surfaces.cli_common import PROG as BASE_PROG

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_command", "main", "run"]

EXIT_OK = 0
EXIT_INVALID = 1

PROG = f"{BASE_PROG} alert-policies"  # as invoked: rollback-controller or python -m controller


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def add_command(subparsers: Subparsers) -> None:
    """Register ``alert-policies`` on the controller's CLI (``controller.cli.COMMANDS``)."""
    parser = subparsers.add_parser(
        "alert-policies",
        help="generate Cloud Monitoring alert policies from the rollback policies",
        description="Print one Cloud Monitoring AlertPolicy (API JSON) per rollback policy and trigger, "
        "as a JSON array; with --output-dir, write one file per policy and trigger for "
        "`gcloud alpha monitoring policies create --policy-from-file=FILE`. See docs/alert-policies.md.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="policy files or directories, as one set (default: $ROLLBACK_POLICIES, else policies/)",
    )
    parser.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="NAME",
        help="notification channel, projects/P/notificationChannels/ID (repeatable); "
        f"default: the placeholder {CHANNEL_PLACEHOLDER}",
    )
    parser.add_argument(
        "--probe-period",
        default="10",
        metavar="SECONDS|none",
        help="the services' liveness probe period, as `gcloud run services describe` shows it; `none` when "
        "they have no liveness probe (Cloud Run's default: only a TCP startup probe) (default: 10)",
    )
    parser.add_argument(
        "--output-dir",
        "-o",
        metavar="DIR",
        help="write POLICY.TRIGGER.json files into DIR (created if missing) instead of printing",
    )
    parser.add_argument(
        "--format",
        choices=("json", "terraform"),
        default="json",
        help="json: the API's AlertPolicy JSON (default); terraform: google_monitoring_alert_policy resources "
        "as Terraform JSON for deploy/terraform (with --output-dir: DIR/alert_policies.tf.json), notifying the "
        "module's channel unless --channel is given",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The ``alert-policies`` handler: 0 done, 1 invalid policies, 2 usage error."""
    # Resolved per call, not at import: tests and callers may swap sys.stdout.
    out, err = out or sys.stdout, err or sys.stderr
    try:
        for channel in args.channel:
            check_channel(channel)
    except AlertPolicyError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return EXIT_USAGE
    raw_period = str(getattr(args, "probe_period", "10")).strip().lower()
    period: timedelta | None = None
    if raw_period != "none":
        if not raw_period.isdigit() or not 1 <= int(raw_period) <= 3600:
            print(f"{PROG}: error: --probe-period {raw_period!r}: expected whole seconds (1-3600) or none", file=err)
            return EXIT_USAGE
        period = timedelta(seconds=int(raw_period))
    paths: list[str] = list(args.paths) or [_display(policies_from_env())]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        for path in missing:
            print(f"{PROG}: error: no such file or directory: {path}", file=err)
        return EXIT_USAGE
    try:
        policies = load_policy_paths(paths)
    except PolicyLoadError as exc:
        for line in exc.problems:
            print(line, file=out)
        print(f"{len(exc.problems)} problem(s) in {', '.join(paths)}: nothing generated", file=err)
        return EXIT_INVALID
    try:
        generated = generate(policies, channels=args.channel, probe_period=period)
    except AlertPolicyError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return EXIT_INVALID

    terraform = getattr(args, "format", "json") == "terraform"
    if not args.channel and not terraform:
        print(
            f"warning: no --channel given; the policies notify {CHANNEL_PLACEHOLDER}: replace it with "
            "your Pub/Sub channel (gcloud beta monitoring channels list) before creating them",
            file=err,
        )
    for policy in policies:
        if not any(g.policy == policy.name for g in generated):
            print(f"note: policy {policy.name!r} enforces no trigger; no alert policy for it", file=err)
    for item in generated:
        for note in item.notes:
            print(f"note: {item.filename}: {note}", file=err)

    if terraform:
        return _write_terraform(generated, args, out, err)
    if args.output_dir:
        directory = Path(args.output_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for item in generated:
                (directory / item.filename).write_text(item.to_json(), encoding="utf-8")
        except OSError as exc:
            print(f"{PROG}: error: cannot write to {args.output_dir}: {exc.strerror}", file=err)
            return EXIT_USAGE
        for item in generated:
            print(directory / item.filename, file=out)
    else:
        out.write(json.dumps([g.body for g in generated], indent=2, ensure_ascii=False) + "\n")
    return EXIT_OK


def _write_terraform(
    generated: Sequence[GeneratedAlertPolicy], args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    text = dumps(to_terraform(generated, channels=args.channel))
    if not args.output_dir:
        out.write(text)
        return EXIT_OK
    target = Path(args.output_dir) / FILENAME
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"{PROG}: error: cannot write to {args.output_dir}: {exc.strerror}", file=err)
        return EXIT_USAGE
    print(target, file=out)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``alert-policies`` alone (``python -m controller.surfaces.cli_alert_policies``), as the CLI would."""
    parser = argparse.ArgumentParser(prog="python -m controller")
    add_command(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(["alert-policies", *(sys.argv[1:] if argv is None else argv)])
    except SystemExit as exc:  # --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
