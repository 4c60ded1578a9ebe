"""Fault injection for the Cloud Run emulator: what a real API does on a bad day, on demand.

Every :class:`~controller.emulator.cloudrun.CloudRunEmulator` has one :class:`CloudRunFaults` as
``emulator.faults``. Tests (and the CLI, later) arm faults on it; each armed fault is consumed by the
requests it matches, so a test states exactly how many calls misbehave. Actions are the emulator's
route names: ``get_service``, ``list_services``, ``update_service``, ``list_revisions``,
``get_revision``, ``get_operation``; ``None`` matches any of them.

=====================================  ==================================================================
``error(503, action=..., times=2)``    answer an HTTP error *before* anything happens (429, 500, 503,
                                       401, 403, 412, ... with Google's JSON error body and status name)
``delay(2.0, action=..., times=1)``    sleep before handling the request (a slow API)
``delay(2.0, after_commit=True)``      handle (and commit) the request, then sleep before answering:
                                       with a client timeout shorter than the delay, the write happened
                                       but its answer is lost
``hang(action="get_operation")``       like ``delay`` with a long sleep (a hung call); released by
                                       :meth:`release`, :meth:`clear`, ``emulator.reset()`` and ``stop()``
``fail_operations(times=1, code=13)``  the next PATCHes are committed (spec, annotations, generation) but
                                       their operation ends with ``error.code`` (Cloud Run's behaviour
                                       when reconciliation fails: see ``fail_to_serve`` on the emulator)
``conflict_always = True``             every PATCH answers 409 ABORTED (a service that never settles)
``unknown_fields = True``              every JSON answer carries fields newer than the pinned client
                                       (google-cloud-run parses them leniently, api-core's operation
                                       polls strictly)
=====================================  ==================================================================

Sleeps wait on an event, so stopping the emulator never waits out an injected delay.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["UNKNOWN_FIELD", "CloudRunFaults", "InjectedError"]

#: The key added to every object when ``unknown_fields`` is on (not a field of any pinned proto).
UNKNOWN_FIELD = "fieldAddedAfterThisClient"

# Google's JSON error "status" for the HTTP codes a test injects (google.rpc.Code mapping, AIP-193).
_STATUS_NAMES = {
    400: "FAILED_PRECONDITION",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_HANG_SECONDS = 120.0  # a "hung" call still ends eventually, so no emulator thread lives forever


@dataclass(frozen=True)
class InjectedError:
    """An HTTP error the emulator answers instead of handling the request."""

    http_status: int
    status: str
    message: str


@dataclass
class _Rule:
    kind: str  # "error" | "delay" | "delay_after"
    action: str | None
    times: int
    seconds: float = 0.0
    error: InjectedError | None = None


class CloudRunFaults:
    """The armed faults of one emulator (thread-safe; see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._released = threading.Event()
        self._failing_operations: list[tuple[int, str]] = []
        self.conflict_always = False
        self.unknown_fields = False

    # -- arming ------------------------------------------------------------------------------
    def error(self, http_status: int = 503, *, action: str | None = None, times: int = 1, message: str = "") -> None:
        """Answer the next ``times`` matching requests with ``http_status`` (nothing else happens)."""
        status = _STATUS_NAMES.get(http_status, "UNKNOWN")
        text = message or f"Injected fault: {status.lower().replace('_', ' ')}."
        self._add(_Rule("error", action, times, error=InjectedError(http_status, status, text)))

    def delay(self, seconds: float, *, action: str | None = None, times: int = 1, after_commit: bool = False) -> None:
        """Sleep ``seconds`` before handling (or, ``after_commit``, after handling and before answering)."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._add(_Rule("delay_after" if after_commit else "delay", action, times, seconds=seconds))

    def hang(self, *, action: str | None = None, times: int = 1, seconds: float = _HANG_SECONDS) -> None:
        """A call that does not answer (until :meth:`release`, or ``seconds`` at most)."""
        self.delay(seconds, action=action, times=times)

    def fail_operations(self, *, times: int = 1, code: int = 13, message: str = "") -> None:
        """The next ``times`` PATCHes commit, then their operation fails with ``code`` (13 = INTERNAL)."""
        text = message or "Injected fault: the rollout of this change failed."
        with self._lock:
            self._failing_operations.extend([(code, text)] * times)

    def release(self) -> None:
        """Wake every request sleeping in an injected delay or hang now (they answer normally)."""
        self._released.set()

    def clear(self) -> None:
        """Disarm everything and release sleeping requests."""
        with self._lock:
            self._rules.clear()
            self._failing_operations.clear()
            self.conflict_always = False
            self.unknown_fields = False
        self.release()

    # -- used by the emulator ----------------------------------------------------------------
    def _add(self, rule: _Rule) -> None:
        if rule.times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._released.clear()
            self._rules.append(rule)

    def _take(self, kinds: tuple[str, ...], action: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.kind in kinds and rule.action in (None, action):
                    rule.times -= 1
                    if rule.times <= 0:
                        self._rules.remove(rule)
                    return rule
        return None

    def before(self, action: str) -> InjectedError | None:
        """Run before a request is handled: sleeps for a delay, returns an error to answer, or None."""
        rule = self._take(("error", "delay"), action)
        if rule is None:
            return None
        if rule.kind == "delay":
            self._released.wait(rule.seconds)
            return None
        return rule.error

    def after(self, action: str) -> None:
        """Run after a request was handled, before its answer is sent."""
        rule = self._take(("delay_after",), action)
        if rule is not None:
            self._released.wait(rule.seconds)

    def take_operation_failure(self) -> tuple[int, str] | None:
        with self._lock:
            return self._failing_operations.pop(0) if self._failing_operations else None

    def decorate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Add an unknown field to the answer and to every resource inside it (when armed)."""
        if not self.unknown_fields:
            return payload
        out = dict(payload)
        out[UNKNOWN_FIELD] = {"addedIn": "a newer API version"}
        for key in ("metadata", "response"):
            if isinstance(out.get(key), dict):
                out[key] = {**out[key], UNKNOWN_FIELD: "newer"}
        for key in ("services", "revisions"):
            if isinstance(out.get(key), list):
                out[key] = [{**item, UNKNOWN_FIELD: "newer"} for item in out[key]]
        return out
