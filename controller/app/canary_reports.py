"""What a canary tick, a CI gate and a status read answer, and their JSON (API and ``--json``).

The models are filled by :class:`controller.app.canary_control.CanaryControl`; the JSON shapes are
the documented wire format of ``POST /canary/tick``, ``/canary/gate``, ``GET /canary/status`` and the
CLI's ``--json`` (traffic in Cloud Run's words).
"""

from __future__ import annotations

from typing import Any

from controller.core.canary import Step
from controller.core.canary_verdict import Comparison, Verdict
from controller.core.errors import PermanentError
from controller.core.evidence import Window
from controller.core.ledger import CanaryState
from controller.core.manual_results import traffic_json
from controller.core.state import Frozen, ServiceRef, TrafficTarget


class NoCanaryPolicy(PermanentError):
    """No policy with a ``canary`` block covers the service (a gate can never pass)."""


class CanaryReport(Frozen):
    """What one tick did for one service (the API answers it, ``--json`` prints it)."""

    service: ServiceRef
    policy: str = ""
    step: Step = Step.NONE
    message: str = ""
    candidate: str = ""
    stable: str = ""
    percent: int = 0
    comparison: Comparison | None = None
    window: Window | None = None
    changed: bool = False
    confirmed: bool = True
    dry_run: bool = False
    attempts: int = 0
    notified: bool = False
    traffic: tuple[TrafficTarget, ...] = ()
    canary: CanaryState | None = None  # the ledger's canary state after the tick
    error: str = ""  # tick_all: this service failed (the others still ran)


class GateReport(Frozen):
    """The CI answer: ``verdict`` pass | fail | inconclusive (keep polling), with the evidence."""

    verdict: Verdict
    step: Step
    percent: int
    candidate: str
    stable: str
    revision: str  # the revision the verdict is about
    evidence: tuple[str, ...]
    reasons: tuple[str, ...]
    message: str
    service: ServiceRef


class CanaryStatus(Frozen):
    service: ServiceRef
    policy: str
    steps: tuple[int, ...]
    canary: CanaryState | None
    last_good: str
    quarantined: tuple[str, ...]
    traffic: tuple[TrafficTarget, ...]


def report_json(report: CanaryReport) -> dict[str, Any]:
    """A tick's outcome as the API answers it and ``--json`` prints it (traffic in Cloud Run's words)."""
    data = report.model_dump(mode="json")
    data["traffic"] = traffic_json(report.traffic)
    return data


def gate_json(report: GateReport) -> dict[str, Any]:
    """``{verdict, step, percent, candidate, stable, revision, evidence, reasons, message, service}``."""
    data: dict[str, Any] = report.model_dump(mode="json")
    return data


def status_json(status: CanaryStatus) -> dict[str, Any]:
    data = status.model_dump(mode="json")
    data["traffic"] = traffic_json(status.traffic)
    return data
