"""What every operator CLI command shares: who the actor is, where logs go, which settings and project.

Kept free of heavy imports (``python -m controller --help`` must stay fast); the settings module
is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from typing import TYPE_CHECKING, TextIO

from controller.logs import CloudLoggingFormatter

if TYPE_CHECKING:
    from controller.settings import Settings

EXIT_USAGE = 2


def actor(args: argparse.Namespace) -> str:
    """``--actor`` if given, else ``cli:$USER`` (recorded with the action in the ledger and Slack)."""
    if getattr(args, "actor", None):
        return str(args.actor)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = "unknown"
    return f"cli:{user}"


def log_to_stderr() -> None:
    """The action's JSON log line goes to stderr (stdout is for the table or --json)."""
    logger = logging.getLogger("controller")
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
    from controller.settings import Settings

    try:
        settings = Settings.from_env(os.environ)
    except ValueError as exc:
        print(f"{command}: error: {exc}", file=err)
        return EXIT_USAGE
    project = args.project or settings.default_project
    if not project:
        print(f"{command}: error: --project is required (GOOGLE_CLOUD_PROJECT is unset)", file=err)
        return EXIT_USAGE
    return settings, project
