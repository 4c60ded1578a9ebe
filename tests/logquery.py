"""Enough of Cloud Logging to test log-based metrics against the controller's real log lines.

Two parts, both modelled on Google's documentation, not on our own metrics:

* ``to_entry``: what Cloud Run's logging agent makes of one JSON line on stdout ("Structured
  logging", special JSON fields: https://cloud.google.com/logging/docs/structured-logging). The
  special fields leave the payload (``severity``, ``time``, ``logging.googleapis.com/labels`` ->
  ``labels``, ``.../trace``, ``.../spanId``, ``.../insertId``, ``.../sourceLocation``); ``message``
  and every other key stay in ``jsonPayload``. The resource of a gen2 function's logs is its Cloud
  Run revision (``cloud_run_revision``).
* ``matches``/``extract``: the subset of the Logging query language the metrics use
  (https://cloud.google.com/logging/docs/view/logging-query-language): comparisons joined by
  ``AND``; ``=``, ``!=``, ``:`` (has; ``:*`` = the field exists), ``<``, ``<=``, ``>``, ``>=``;
  quoted strings or bare values; and ``EXTRACT(field)`` for label and value extractors.
  Anything else (OR, NOT, parentheses, regular expressions) raises ``Unsupported``, so a filter
  this module cannot evaluate fails the test instead of passing it.
"""

from __future__ import annotations

import json
import re
from typing import Any

SPECIAL = {
    "severity": "severity",
    "time": "timestamp",
    "timestamp": "timestamp",
    "logging.googleapis.com/labels": "labels",
    "logging.googleapis.com/trace": "trace",
    "logging.googleapis.com/spanId": "spanId",
    "logging.googleapis.com/insertId": "insertId",
    "logging.googleapis.com/sourceLocation": "sourceLocation",
    "logging.googleapis.com/operation": "operation",
}
SEVERITIES = ["DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"]


class Unsupported(ValueError):
    """A filter construct this evaluator does not model."""


def to_entry(line: str, *, service: str = "rollback-alert", region: str = "europe-west1") -> dict[str, Any]:
    payload = json.loads(line)
    assert isinstance(payload, dict), line
    entry: dict[str, Any] = {
        "resource": {
            "type": "cloud_run_revision",
            "labels": {"service_name": service, "revision_name": f"{service}-00001-abc", "location": region},
        },
        "severity": "DEFAULT",
    }
    for key, name in SPECIAL.items():
        if key in payload:
            entry[name] = payload.pop(key)
    entry["jsonPayload"] = payload
    return entry


_TERM = re.compile(
    r"""\s*(?P<field>[A-Za-z_][\w]*(?:\.[A-Za-z_][\w/-]*)*)\s*
        (?P<op>!=|>=|<=|=~|!~|=|:|<|>)\s*
        (?P<value>"(?:[^"\\]|\\.)*"|\*|[^\s()"]+)\s*$""",
    re.VERBOSE,
)


def _terms(query: str) -> list[tuple[str, str, str]]:
    if re.search(r"\bOR\b|\bNOT\b|[()]|^\s*-", query):
        raise Unsupported(f"only comparisons joined by AND are modelled: {query!r}")
    out = []
    for part in re.split(r"\s+AND\s+", query.strip()):
        m = _TERM.match(part)
        if not m or m["op"] in ("=~", "!~"):
            raise Unsupported(f"cannot evaluate {part!r}")
        value = m["value"]
        if value.startswith('"'):
            value = json.loads(value)
        out.append((m["field"], m["op"], value))
    return out


_MISSING = object()


def _lookup(entry: dict[str, Any], field: str) -> Any:
    node: Any = entry
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _compare(actual: Any, op: str, wanted: str, field: str) -> bool:
    if op == ":":
        if wanted == "*":
            return actual is not _MISSING
        return actual is not _MISSING and wanted.lower() in _text(actual).lower()
    if actual is _MISSING:
        return op == "!="
    if field == "severity" and op in ("<", "<=", ">", ">="):
        a, w = SEVERITIES.index(str(actual)), SEVERITIES.index(wanted)
    elif isinstance(actual, (int, float)) and not isinstance(actual, bool) and op not in ("=", "!="):
        a, w = actual, float(wanted)  # type: ignore[assignment]
    elif op in ("=", "!="):
        if isinstance(actual, (int, float)) and not isinstance(actual, bool):
            try:
                equal = float(wanted) == actual
            except ValueError:
                equal = False
        else:
            equal = _text(actual) == wanted
        return equal if op == "=" else not equal
    else:
        a, w = _text(actual), wanted  # type: ignore[assignment]
    return {"<": a < w, "<=": a <= w, ">": a > w, ">=": a >= w}[op]


def matches(query: str, entry: dict[str, Any]) -> bool:
    return all(_compare(_lookup(entry, f), op, v, f) for f, op, v in _terms(query))


_EXTRACT = re.compile(r"^EXTRACT\(\s*([A-Za-z_][\w]*(?:\.[A-Za-z_][\w/-]*)*)\s*\)$")


def extractor_field(expression: str) -> str:
    m = _EXTRACT.match(expression.strip())
    if not m:
        raise Unsupported(f"only EXTRACT(field) is modelled: {expression!r}")
    return m[1]


def extract(expression: str, entry: dict[str, Any]) -> str | None:
    """The extractor's value for an entry (a string, as labels are), None when the field is absent."""
    value = _lookup(entry, extractor_field(expression))
    if value is _MISSING or value is None or isinstance(value, (dict, list)):
        return None
    return _text(value)
