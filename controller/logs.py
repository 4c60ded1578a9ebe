"""Structured logs in the form Cloud Logging understands: one JSON object per line on stdout.

Cloud Functions forwards stdout to Cloud Logging, which reads ``severity``, ``message``,
``logging.googleapis.com/labels`` and ``logging.googleapis.com/trace`` from a JSON line and
keeps the rest as ``jsonPayload``. Pass structured fields with ``extra={"fields": {...}}``.
Nothing here ever formats a token or a secret: settings hold those as ``SecretStr``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LABELS_KEY = "logging.googleapis.com/labels"
_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


class CloudLoggingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        labels = getattr(record, "labels", None)
        if isinstance(labels, dict):
            entry[LABELS_KEY] = {str(k): str(v) for k, v in labels.items()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is at emit time (so test capture and reloads work)."""

    _cloud_logging = True

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def configure(level: int = logging.INFO) -> None:
    """Route the ``controller`` loggers to stdout as JSON lines (idempotent)."""
    logger = logging.getLogger("controller")
    if any(getattr(h, "_cloud_logging", False) for h in logger.handlers):
        return
    handler = _StdoutHandler(sys.stdout)
    handler.setFormatter(CloudLoggingFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    # Our lines are complete on their own; do not also print them through the root logger.
    logger.propagate = False
