"""Google's documented formats for the names the controller puts into resource names.

An alert's labels come from outside (a label, a user label, a hand-edited alert policy), and the
controller builds ``projects/{project}/locations/{region}/services/{service}/revisions/{revision}``
from them. A value with ``/``, ``.``, ``..``, a lone surrogate or 70 KB of text must never reach
that string: it would address another resource, or fail the same way on every redelivery (a
poison message). So every name is checked here, at the edge, against the format Google documents,
and a value that cannot be right is a ``MalformedInput``: logged as rejected and acknowledged.

Formats (each is a single DNS-label-like token, so none can contain ``/`` or ``.`` segments):

* **project**: a project ID, 6-30 characters, lowercase letters, digits and hyphens, starting
  with a letter, not ending with a hyphen (Resource Manager, "Creating and managing projects");
  a legacy domain-scoped ID ``example.com:my-project``; or a project number (resource names
  accept both).
* **region**: a Cloud Run location such as ``us-central1`` or ``northamerica-northeast1``
  (lowercase words joined by hyphens, ending in a number; the published location list).
* **service**: "must begin with letter, and cannot end with hyphen; must contain fewer than 50
  characters" (``CreateServiceRequest.service_id`` in google-cloud-run), lowercase letters,
  digits and hyphens (RFC 1035 label; Cloud Run's own error text).
* **revision**: an RFC 1035 label of at most 63 characters (``checkout-00042-xyz``, or a
  custom suffix).

Pure: no clock, no network.
"""

from __future__ import annotations

import re
from typing import Final

from controller.core.errors import MalformedInput

PROJECT: Final = re.compile(
    r"(?:[a-z][a-z0-9-]{0,61}[a-z0-9](?:\.[a-z][a-z0-9-]{0,61}[a-z0-9])*:)?[a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{1,19}"
)
REGION: Final = re.compile(r"[a-z]{2,20}(?:-[a-z]{2,20}){1,2}[0-9]{1,2}")
SERVICE: Final = re.compile(r"[a-z](?:[a-z0-9-]{0,47}[a-z0-9])?")
REVISION: Final = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")

_FORMATS: Final = {
    "project": (PROJECT, "a project ID (6-30 lowercase letters, digits, hyphens; starts with a letter) or number"),
    "region": (REGION, "a Cloud Run region such as us-central1"),
    "service": (SERVICE, "a Cloud Run service name (lowercase letters, digits, hyphens; 1-49 chars)"),
    "revision": (REVISION, "a Cloud Run revision name (lowercase letters, digits, hyphens; 1-63 chars)"),
}
_SHOWN_CHARS: Final = 64


def shown(value: str) -> str:
    """``value`` as it may appear in a log line or an error: clipped, quoted, unencodable text escaped."""
    clipped = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"
    text = ascii(clipped)  # escapes lone surrogates and control characters
    return text + (f" ({len(value)} chars)" if len(value) > _SHOWN_CHARS else "")


def problem(kind: str, value: str) -> str:
    """Why ``value`` is not a valid ``kind`` ("project", "region", "service", "revision"), or ""."""
    pattern, description = _FORMATS[kind]
    if pattern.fullmatch(value):
        return ""
    return f"{kind} {shown(value)} is not {description}"


def check(kind: str, value: str | None, *, where: str = "") -> None:
    """Raise ``MalformedInput`` when ``value`` is set and not a valid ``kind``."""
    if value is None or value == "":
        return
    why = problem(kind, value)
    if why:
        raise MalformedInput(f"{where}: {why}" if where else why)
