"""What the HTTP routes accept: request models, the body limit, JSON and query parsing, ``HttpError``.

Every route reads its input through these helpers, so the 413/422 answers have one shape:
``{"error": "payload_too_large" | "invalid_request", "message", "fields"?}``.

The body limit is checked by hand, on werkzeug's parsed ``Content-Length`` and on werkzeug's
request stream, not with ``request.max_content_length``: functions-framework's after-request hook
(``read_request``) calls ``request.get_data()`` once the function has answered, and with the limit
set on the request that call raises again outside the function, so a 413 becomes a 500 (seen with
functions-framework 3.10.2 and werkzeug 3.1). For a body without ``Content-Length`` werkzeug's
maximum stops reading at the limit instead of refusing (``LimitedStream.readall``, pallets/werkzeug
#2620), so reading one byte past the limit is still the only way to tell "too large" from "exactly
the limit".
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.datastructures import Headers
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request

from controller.core.errors import ControllerError

M = TypeVar("M", bound=BaseModel)

MAX_BODY_BYTES: Final = 64 * 1024

# --------------------------------------------------------------------------- request models

_NAME = r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$"  # Cloud Run service / revision ids, regions
_PROJECT = r"^[a-z][a-z0-9.:-]{4,61}[a-z0-9]$"  # project ids (incl. domain-scoped example.com:proj)
_NAME_OR_EMPTY = r"^(?:[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?)?$"  # an optional revision name


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Coordinates(_Strict):
    """Which service: ``project`` defaults to GOOGLE_CLOUD_PROJECT."""

    project: str | None = Field(default=None, pattern=_PROJECT)
    region: str = Field(pattern=_NAME)
    service: str = Field(pattern=_NAME)


class RollbackRequest(Coordinates):
    to_revision: str | None = Field(default=None, pattern=_NAME)
    reason: str = Field(min_length=1, max_length=500)
    dry_run: bool = False
    force: bool = False  # route traffic to a quarantined revision anyway


class UndoRequest(Coordinates):
    reason: str = Field(default="", max_length=500)
    dry_run: bool = False


class HoldRequest(Coordinates):
    reason: str = Field(default="", max_length=500)


class StatusQuery(Coordinates):
    pass


class CanaryTickRequest(_Strict):
    """All services with a canary policy (in the project's ROLLBACK_REGIONS, or ``region``), or one."""

    project: str | None = Field(default=None, pattern=_PROJECT)
    region: str | None = Field(default=None, pattern=_NAME)
    service: str | None = Field(default=None, pattern=_NAME)


class CanaryGateRequest(Coordinates):
    revision: str = Field(default="", pattern=_NAME_OR_EMPTY)


class CanaryApproveRequest(Coordinates):
    candidate: str = Field(default="", pattern=_NAME_OR_EMPTY)


# --------------------------------------------------------------------------- errors


class HttpError(ControllerError):
    """An answer other than 200, raised from deep inside a handler."""

    def __init__(self, status: int, error: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": error, "message": message, **extra}
        self.headers: dict[str, str] = {}


def invalid(fields: list[dict[str, str]]) -> HttpError:
    names = ", ".join(f["field"] for f in fields)
    return HttpError(422, "invalid_request", f"invalid request: {names}", fields=fields)


def too_large(_exc: RequestEntityTooLarge | None = None) -> HttpError:
    return HttpError(413, "payload_too_large", f"request bodies are limited to {MAX_BODY_BYTES} bytes")


def _fields(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"]} for err in exc.errors()]


# --------------------------------------------------------------------------- reading a request


class HeaderMapping(Mapping[str, str]):
    """werkzeug's case-insensitive headers, uncopied, behind the ``Mapping`` the verifiers take
    (werkzeug's ``Headers`` iterates ``(name, value)`` pairs, so it is not one itself)."""

    def __init__(self, headers: Headers) -> None:
        self._headers = headers

    def __getitem__(self, name: str) -> str:
        return self._headers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers.keys())

    def __len__(self) -> int:
        return len(self._headers)


def refuse_declared_oversize(request: Request) -> None:
    """413 for a ``Content-Length`` over the limit: costs nothing, so it comes before authentication."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise RequestEntityTooLarge()


def read_body(request: Request) -> bytes:
    """The raw body, at most MAX_BODY_BYTES (413 beyond, whether or not Content-Length said so)."""
    data = request.stream.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise RequestEntityTooLarge()
    return data


def query_dict(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, values in request.args.lists():
        if len(values) != 1:
            raise invalid([{"field": key, "message": "given more than once"}])
        out[key] = values[0]
    return out


def _parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise invalid([{"field": "body", "message": f"not valid JSON: {exc}"}]) from None
    except RecursionError:
        raise invalid([{"field": "body", "message": "JSON nested too deeply"}]) from None
    if not isinstance(value, dict):
        raise invalid([{"field": "body", "message": "must be a JSON object"}])
    return value


def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object (empty body: ``{}``)."""
    return _parse_json_object(read_body(request))


def merged(request: Request) -> dict[str, Any]:
    """Query and body together (a scheduler, CI or a DELETE may send either); they must agree."""
    query, body = query_dict(request), json_body(request)
    clashes = [k for k in query.keys() & body.keys() if query[k] != body[k]]
    if clashes:
        raise invalid([{"field": k, "message": "query and body disagree"} for k in sorted(clashes)])
    return {**query, **body}


def validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(_fields(exc)) from None
