"""Structured logs in the form Cloud Logging understands: one JSON object per line on stdout.

Cloud Functions forwards stdout to Cloud Logging, which reads ``severity``, ``message``,
``logging.googleapis.com/labels`` and ``logging.googleapis.com/trace`` from a JSON line and
keeps the rest as ``jsonPayload``. Pass structured fields with ``extra={"fields": {...}}``.
Nothing here ever formats a token or a secret: settings hold those as ``SecretStr``.

A line is always written, whatever the fields hold (the audit trail must not have holes):

* Text that cannot be encoded (a lone surrogate from a hostile label) is written as a JSON
  ``\\uXXXX`` escape instead of making the stream raise, which would drop the record.
* Every value is bounded: strings to ``MAX_FIELD_CHARS``, containers to ``MAX_ITEMS`` entries and
  ``MAX_DEPTH`` levels, and the whole line to ``MAX_LINE_CHARS`` (a 256 KiB label repeated in the
  message, the incident and the error must not make a megabyte line; Cloud Logging's limit per
  entry is 256 KB). What was cut says so (``…(+N chars)``).
* A field that cannot be serialised at all still yields a line with the message and the error.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LABELS_KEY = "logging.googleapis.com/labels"
MAX_FIELD_CHARS = 4096
MAX_ITEMS = 100
MAX_DEPTH = 8
MAX_LINE_CHARS = 64 * 1024
_SMALL_FIELD_CHARS = 256  # the second pass, for a line still over MAX_LINE_CHARS
_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


def bounded(value: Any, *, limit: int = MAX_FIELD_CHARS, depth: int = 0) -> Any:
    """``value`` with every string clipped to ``limit`` and containers cut to MAX_ITEMS / MAX_DEPTH."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}…(+{len(value) - limit} chars)"
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= MAX_DEPTH:
        return "…(nested too deeply)"
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for i, (key, item) in enumerate(value.items()):
            if i >= MAX_ITEMS:
                out["…"] = f"+{len(value) - MAX_ITEMS} more keys"
                break
            out[bounded(str(key), limit=min(limit, 256))] = bounded(item, limit=limit, depth=depth + 1)
        return out
    if isinstance(value, list | tuple):
        items = [bounded(item, limit=limit, depth=depth + 1) for item in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"…(+{len(value) - MAX_ITEMS} more)")
        return items
    return bounded(str(value), limit=limit)


def _dumps(entry: dict[str, Any]) -> str:
    text = json.dumps(entry, default=str, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: JSON's \uXXXX escapes are plain ASCII and still valid JSON.
        text = json.dumps(entry, default=str, ensure_ascii=True)
    return text


class CloudLoggingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception as exc:  # bad %-args must not cost the line
            message = f"{record.msg!s} (log arguments did not format: {type(exc).__name__})"
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": message,
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
        try:
            text = _dumps(bounded(entry))
            if len(text) > MAX_LINE_CHARS:
                text = _dumps(bounded(entry, limit=_SMALL_FIELD_CHARS))
            if len(text) > MAX_LINE_CHARS:
                raise ValueError(f"line still {len(text)} chars after bounding")
        except Exception as exc:
            # Never drop the record: keep what identifies it and say why the rest is missing.
            entry = {k: entry[k] for k in ("severity", "time", "logger")}
            entry["message"] = bounded(message, limit=_SMALL_FIELD_CHARS)
            entry["log_error"] = f"fields not logged: {type(exc).__name__}: {bounded(str(exc), limit=200)}"
            text = _dumps(entry)
        return text


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is at emit time (so test capture and reloads work)."""

    _cloud_logging = True

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        encoding = getattr(self.stream, "encoding", None) or "utf-8"
        if encoding.lower().replace("-", "") in ("utf8", "utf8sig"):
            super().emit(record)
            return
        # A stream that cannot take UTF-8 (a C locale): ASCII-only JSON, never a dropped record.
        try:
            line = json.dumps(json.loads(self.format(record)), ensure_ascii=True)
            self.stream.write(line + self.terminator)
            self.flush()
        except Exception:
            self.handleError(record)


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
