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

Correlation (issue 8 item 7): the keys that join one delivery's or one request's lines in Cloud
Logging (``logging.googleapis.com/trace``, ``.../spanId`` and the functions-framework
``execution_id`` label) are set once per invocation by the entry points (``main.py``) with
:func:`invocation` and added by the formatter to every line written meanwhile, as AWS Powertools'
``append_keys`` does. They live in a ``contextvars.ContextVar``, so two deliveries served at once
(threads) never mix; a thread started inside an invocation without ``contextvars.copy_context``
does not inherit them. Trace context comes from a W3C ``traceparent`` (the CloudEvent extension
attribute Eventarc sets, or the HTTP header) or Google's ``X-Cloud-Trace-Context`` header
(``TRACE_ID/SPAN_ID;o=1``, the span in decimal: written as the 16 hex digits ``LogEntry.spanId``
takes, as google-cloud-logging's ``_parse_xcloud_trace`` does).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

LABELS_KEY = "logging.googleapis.com/labels"
TRACE_KEY = "logging.googleapis.com/trace"
SPAN_KEY = "logging.googleapis.com/spanId"
EXECUTION_ID_LABEL = "execution_id"
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


# W3C Trace Context: version-traceid-parentid-flags, lowercase hex (https://www.w3.org/TR/trace-context/).
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
# Google's legacy header (https://cloud.google.com/trace/docs/trace-context#legacy-http-header).
_CLOUD_TRACE = re.compile(r"([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=[0-9])?")
_EXECUTION_ID = re.compile(r"[\w.-]{1,64}")
_NO_KEYS: Mapping[str, Any] = MappingProxyType({})
_invocation_keys: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "controller_log_keys", default=_NO_KEYS
)


def _parse_traceparent(value: str | None) -> tuple[str, str | None] | None:
    match = _TRACEPARENT.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or set(match.group(1)) == {"0"}:
        return None
    return match.group(1), (None if set(match.group(2)) == {"0"} else match.group(2))


def _parse_cloud_trace(value: str | None) -> tuple[str, str | None] | None:
    match = _CLOUD_TRACE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        return None
    span = int(match.group(2)) if match.group(2) else 0
    return match.group(1).lower(), (f"{span:016x}" if 0 < span < 2**64 else None)


def correlation_keys(
    project: str | None,
    *,
    traceparent: str | None = None,
    cloud_trace_context: str | None = None,
    execution_id: str | None = None,
) -> dict[str, Any]:
    """The Cloud Logging keys joining one invocation's lines; what is unknown or malformed is left out.

    ``traceparent`` wins over ``cloud_trace_context`` (as in google-cloud-logging). Without a
    project there is no ``projects/P/traces/ID`` to write, so no trace (the span means nothing alone).
    """
    keys: dict[str, Any] = {}
    parsed = _parse_traceparent(traceparent) or _parse_cloud_trace(cloud_trace_context)
    if parsed is not None and project:
        trace_id, span_id = parsed
        keys[TRACE_KEY] = f"projects/{project}/traces/{trace_id}"
        if span_id is not None:
            keys[SPAN_KEY] = span_id
    if isinstance(execution_id, str) and _EXECUTION_ID.fullmatch(execution_id):
        keys[LABELS_KEY] = {EXECUTION_ID_LABEL: execution_id}
    return keys


def header_keys(project: str | None, headers: Mapping[str, str], execution_id: str | None) -> dict[str, Any]:
    """:func:`correlation_keys` of a request (``headers`` named ``traceparent``, ``X-Cloud-Trace-Context``)."""
    return correlation_keys(
        project,
        traceparent=headers.get("traceparent"),
        cloud_trace_context=headers.get("X-Cloud-Trace-Context"),
        execution_id=execution_id,
    )


def cloud_event_keys(
    project: str | None, event: Any, headers: Mapping[str, str], execution_id: str | None
) -> dict[str, Any]:
    """:func:`correlation_keys` of a CloudEvent: its ``traceparent`` extension, else the request's headers."""
    try:
        traceparent = event.get("traceparent")
    except Exception:  # not a cloudevents.CloudEvent: the headers still may say
        traceparent = None
    keys = header_keys(project, headers, execution_id)
    from_event = correlation_keys(project, traceparent=traceparent if isinstance(traceparent, str) else None)
    if TRACE_KEY in from_event:  # the event's own trace, with its own span (or none)
        keys.pop(SPAN_KEY, None)
    return {**keys, **from_event}


@contextmanager
def invocation(keys: Mapping[str, Any]) -> Iterator[None]:
    """Add ``keys`` to every line logged in this context until the block ends (one delivery or request)."""
    token = _invocation_keys.set(MappingProxyType(dict(keys)))
    try:
        yield
    finally:
        _invocation_keys.reset(token)


def current_keys() -> Mapping[str, Any]:
    """The keys :func:`invocation` set for the running delivery or request (empty outside one)."""
    return _invocation_keys.get()


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
        invocation_keys = _invocation_keys.get()
        entry.update(invocation_keys)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        labels = getattr(record, "labels", None)
        if isinstance(labels, dict) or LABELS_KEY in invocation_keys:
            merged = {**invocation_keys.get(LABELS_KEY, {}), **(labels if isinstance(labels, dict) else {})}
            entry[LABELS_KEY] = {str(k): str(v) for k, v in merged.items()}
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
            entry.update(invocation_keys)  # still joinable to its delivery
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
