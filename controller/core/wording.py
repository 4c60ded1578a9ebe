"""How the controller says things to people: times and action names in human text.

Pure (no clock, no I/O): the decision, manual-control and CLI modules share it so that a time
reads the same in Slack, in the CLI and in an HTTP answer's ``message``. JSON fields keep ISO 8601.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final


def human_time(at: datetime) -> str:
    """A time as people read it: to the second, with the zone (``2026-05-30 14:02:07 UTC``)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


ACTION_NAMES: Final = {
    "rollback": "automatic rollback",
    "manual-rollback": "manual rollback",
    "undo": "undo",
    "canary-step": "canary step",
    "canary-rollback": "canary rollback",
}
"""The ledger's action kinds (``manual-rollback``...) as people say them."""


def action_name(kind: str) -> str:
    return ACTION_NAMES.get(kind, kind.replace("-", " "))
