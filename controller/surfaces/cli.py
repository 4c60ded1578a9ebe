"""Command line for operators and CI: ``rollback-controller <command>`` (the console script that
``pip install .`` provides) or, from a checkout, ``python -m controller <command>``.

Commands:

* ``validate [PATHS...]`` - lint policy files and directories as one set (default:
  ``$ROLLBACK_POLICIES``, else ``policies/`` at the repository root). Prints one
  ``file:line:col: path: message`` line per problem, or a one-line summary per policy.
* ``schema [--output FILE]`` - print (or write) the JSON Schema of a policy document.

Exit codes: 0 success, 1 invalid policies, 2 usage error (bad arguments, missing path).

Adding a command: write ``_add_<name>(subparsers)`` that creates the sub-parser and sets
``handler`` (``Callable[[argparse.Namespace], int]``) with ``set_defaults``, then list it in
``COMMANDS``. Keep heavy imports (``google.cloud``, ``slack_sdk``) inside the handler: this
module is imported by every command, and ``validate`` must stay fast in CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from controller.adapters.policy_files import PolicyLoadError, load_policy_paths, policy_json_schema
from controller.app.settings import policies_from_env
from controller.core.durations import format_duration
from controller.core.errors import EXIT_USAGE, UsageError
from controller.core.policy import Policy, policy_warnings
from controller.core.policy_matching import PolicySet
from controller.surfaces.cli_alert_policies import add_command as _add_alert_policies  # alert-policies
from controller.surfaces.cli_backtest import add_command as _add_backtest  # backtest (docs/backtest.md)
from controller.surfaces.cli_canary import register as _add_canary  # canary status | tick | gate | approve
from controller.surfaces.cli_common import PROG  # "rollback-controller" or "python -m controller", as invoked
from controller.surfaces.cli_lab import add_command as _add_lab  # lab (docs/lab.md)
from controller.surfaces.cli_manual import register as _add_manual  # rollback, undo, hold, release, status

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_OK = 0
EXIT_INVALID = 1


def _display(path: Path) -> str:
    """A path as a person would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def summarize(policy: Policy, origin: str | None = None) -> str:
    """One line per policy: name, where, match, mode, triggers (and canary when configured)."""
    where = f" ({origin.rsplit(':', 1)[0]})" if origin else ""
    parts = [
        f"match {policy.match.describe()}",
        f"mode {policy.mode}",
        f"triggers {policy.triggers.describe()}",
    ]
    if policy.canary:
        steps = "/".join(str(s) for s in policy.canary.steps)
        parts.append(f"canary {steps}% every {format_duration(policy.canary.step_for)}")
    return f"{policy.name}{where}: {'; '.join(parts)}"


def _plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word if count == 1 else (words or word + 's')}"


# -- validate ------------------------------------------------------------------------------


def _add_validate(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="lint rollback policies (file:line:col errors)",
        description="Validate policy files and directories, taken together as one policy set "
        "(unique names, no two identical match blocks). A directory contributes its top-level "
        "*.yaml/*.yml files only; sub-directories such as examples/ are not read.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="policy files or directories (default: $ROLLBACK_POLICIES, else policies/ at the repository root)",
    )
    parser.set_defaults(handler=_validate)


def _validate(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    # Resolved per call, not at import: tests and callers may swap sys.stdout.
    out, err = out or sys.stdout, err or sys.stderr
    paths: list[str] = list(args.paths) or [_display(policies_from_env())]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        for path in missing:
            print(f"{PROG} validate: error: no such file or directory: {path}", file=err)
        return EXIT_USAGE
    try:
        policies: PolicySet = load_policy_paths(paths)
    except PolicyLoadError as exc:
        for line in exc.problems:
            print(line, file=out)
        print(f"{_plural(len(exc.problems), 'problem')} in {', '.join(paths)}", file=err)
        return EXIT_INVALID
    for policy in policies:
        print(summarize(policy, policies.origin(policy.name)), file=out)
        for warning in policy_warnings(policy):
            print(f"warning: {policies.origin(policy.name) or policy.name}: {warning}", file=err)
    print(f"OK: {_plural(len(policies), 'policy', 'policies')} in {', '.join(paths)}", file=out)
    return EXIT_OK


# -- schema --------------------------------------------------------------------------------


def schema_text() -> str:
    """The policy JSON Schema exactly as ``deploy/policy.schema.json`` holds it."""
    return json.dumps(policy_json_schema(), indent=2, ensure_ascii=False) + "\n"


def _add_schema(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="print the JSON Schema of a policy document",
        description="Print the JSON Schema (2020-12) of one policy document, for editors "
        "(e.g. yaml-language-server) and CI. deploy/policy.schema.json is this output.",
    )
    parser.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of standard output")
    parser.set_defaults(handler=_schema)


def _schema(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    # Resolved per call, not at import: tests and callers may swap sys.stdout.
    out, err = out or sys.stdout, err or sys.stderr
    text = schema_text()
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"{PROG} schema: error: cannot write {args.output}: {exc.strerror}", file=err)
            return EXIT_USAGE
    else:
        out.write(text)
    return EXIT_OK


# -- wiring --------------------------------------------------------------------------------


def _add_demo(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the alert path locally on the emulators (no cloud account needed)",
        description="Start the Cloud Run and Slack emulators with a sample service, serve handle_alert "
        "with functions-framework wired to them, post the shipped sample alert and show the rollback. "
        "Keeps serving until Ctrl-C unless --once is given.",
    )
    parser.add_argument("--once", action="store_true", help="stop after the sample alert (exit 0 if it was handled)")
    parser.add_argument("--port", type=int, default=None, help="port for handle_alert (default: a free one)")
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="also show the function's JSON log lines (always in the log file)"
    )
    parser.add_argument(
        "--log-file", type=Path, default=None, metavar="FILE", help="where the JSON log lines go (default: a temp file)"
    )
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from controller.surfaces import demo

    return demo.run(once=args.once, port=args.port, verbose=args.verbose, log_file=args.log_file)


COMMANDS: list[Callable[[Subparsers], None]] = [
    _add_validate,
    _add_schema,
    _add_demo,
    _add_alert_policies,
    _add_manual,
    _add_canary,
    _add_lab,
    _add_backtest,
]
"""Registrars, in the order ``--help`` lists them. Append new commands here."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; every command sets ``handler`` on its namespace."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Cloud Run rollback controller: operator and CI commands.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (argparse's own exits become return values)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UsageError as exc:  # the operator's mistake: one line, no traceback
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from controller.surfaces.cli_common import explain

        line = explain(exc)
        if line is None:
            raise  # not an operator's problem: a bug, keep the traceback
        print(f"{parser.prog} {args.command}: error: {line}", file=sys.stderr)
        return int(getattr(args, "error_exit", EXIT_INVALID))


def console_main() -> int:
    """The ``rollback-controller`` console script (``pip install .``): the same commands."""
    return main()
