"""What every operator CLI command shares: who the actor is, where logs go, which settings and project.

Kept free of heavy imports (``python -m controller --help`` must stay fast); the settings module
is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import errno
import getpass
import logging
import os
import re
import sys
from typing import TYPE_CHECKING, TextIO

from controller.adapters.logs import CloudLoggingFormatter
from controller.core.errors import EXIT_USAGE
from controller.core.wording import action_name, human_time

if TYPE_CHECKING:
    from controller.app.settings import Settings

CONSOLE_SCRIPT = "rollback-controller"
"""The installed command (``[project.scripts]`` in pyproject.toml): the same parser as ``python -m controller``."""


def program() -> str:
    """How the user invoked us, for usage and error lines: the console script or ``python -m controller``."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return CONSOLE_SCRIPT if invoked == CONSOLE_SCRIPT else "python -m controller"


PROG = program()

__all__ = ["action_name", "add_log_options", "explain", "human_time", "plain_error"]


def actor(args: argparse.Namespace) -> str:
    """``--actor`` if given, else ``cli:$USER`` (recorded with the action in the ledger and Slack)."""
    if getattr(args, "actor", None):
        return str(args.actor)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = "unknown"
    return f"cli:{user}"


def add_log_options(parser: argparse.ArgumentParser) -> None:
    """``--log-json`` / ``-v``: the structured log lines, which are otherwise kept out of a person's way."""
    parser.add_argument(
        "--log-json",
        "-v",
        "--verbose",
        dest="log_json",
        action="store_true",
        help="also print the JSON log lines (Cloud Logging format) on standard error",
    )


def log_to_stderr(args: argparse.Namespace | None = None) -> None:
    """The action's JSON log lines go to stderr with ``--log-json``/``-v`` (stdout is for the table or
    --json); without it they are dropped: the summary already says what happened."""
    logger = logging.getLogger("controller")
    if args is not None and not getattr(args, "log_json", False):
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
        return
    if not any(getattr(h, "_cli_stderr", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(CloudLoggingFormatter())
        handler._cli_stderr = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def settings_and_project(args: argparse.Namespace, command: str, err: TextIO) -> tuple[Settings, str] | int:
    """Settings from the environment and the project (``--project`` or ``GOOGLE_CLOUD_PROJECT``),
    or the usage exit code with the problem printed."""
    from controller.app.settings import Settings

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"{command}: error: {exc}", file=err)
        return EXIT_USAGE
    project = args.project or settings.default_project
    if not project:
        print(f"{command}: error: --project is required (GOOGLE_CLOUD_PROJECT is unset)", file=err)
        return EXIT_USAGE
    return settings, project


# --------------------------------------------------------------------------- human text


_POOL = re.compile(
    r"(?:ConnectionError: )?HTTP(?:S)?ConnectionPool\(host='(?P<host>[^']*)', port=(?P<port>\d+)\): "
    r"Max retries exceeded with url: \S+ \(Caused by (?P<cause>.*)\)\)?$",
    re.DOTALL,
)
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] (?P<text>[^\"')]+)")
_ENCODED_QUERY = re.compile(r"\?%24alt=json[^\s:]*")


def plain_error(text: str) -> str:
    """An error message without urllib3's connection-pool text or the client library's encoded query."""

    def pool(match: re.Match[str]) -> str:
        why = _ERRNO_TEXT.search(match["cause"])
        reason = why["text"].strip().lower() if why else "no connection"
        return f"cannot reach {match['host']}:{match['port']} ({reason})"

    text = _POOL.sub(pool, text)
    return _ENCODED_QUERY.sub("", text)


def explain(exc: BaseException, *, run_endpoint: str | None = None) -> str | None:
    """One line an operator can act on for the failures that are not the controller's own errors
    (missing credentials, a port in use, Cloud Run out of reach), or None (a bug: let it raise)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for item in chain:
        module = type(item).__module__
        name = type(item).__name__
        if name == "DefaultCredentialsError" and module.startswith("google.auth"):
            return (
                "no Google credentials (Application Default Credentials not found): run "
                "`gcloud auth application-default login`, or set ROLLBACK_RUN_ENDPOINT (and "
                "ROLLBACK_MONITORING_ENDPOINT) to use the emulators (`python -m controller.emulator`)"
            )
        if isinstance(item, OSError) and item.errno == errno.EADDRINUSE:
            return "address already in use: another process is listening on that port; pick another (0 = a free one)"
        if name == "ConnectionError" and module.startswith("requests"):
            where = run_endpoint or _configured_run_endpoint() or "run.googleapis.com"
            hint = "is the emulator running?" if where.startswith("http://") else "check the network and proxy"
            return f"cannot reach Cloud Run at {where} ({hint})"
    return None


def _configured_run_endpoint() -> str | None:
    """ROLLBACK_RUN_ENDPOINT, for the hint only (None when the settings cannot be read at all)."""
    from controller.app.settings import Settings  # lazy, as in settings_and_project: CLI start-up

    try:
        return Settings.from_env().run_endpoint
    except ValueError:
        return None
