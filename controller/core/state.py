"""A typed, immutable snapshot of one Cloud Run service and its revisions.

The Cloud Run adapter turns API objects into these; the decision core reads only these,
so it can be tested with plain tables. Revision names here are always the *short* id
(``checkout-00042-xyz``), as in the service's ``traffic`` list.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from controller.core.models import Strict


class Frozen(Strict):
    """Base for the core's value objects: ``Strict`` (controller/core/models.py) under the name they use."""


class ServiceRef(Frozen):
    """Where a service lives. ``name`` is the short service id (``checkout``)."""

    project: str = Field(min_length=1)
    region: str = Field(min_length=1)
    service: str = Field(min_length=1)

    @property
    def resource_name(self) -> str:
        return f"projects/{self.project}/locations/{self.region}/services/{self.service}"

    def revision_resource_name(self, revision: str) -> str:
        return f"{self.resource_name}/revisions/{revision}"

    def __str__(self) -> str:
        return f"{self.project}/{self.region}/{self.service}"


class Revision(Frozen):
    name: str
    create_time: datetime
    ready: bool
    image: str = ""
    # Probe periods of the first container, in seconds; 0 = no such probe (see controller/core/probes.py).
    liveness_period: int = 0
    startup_period: int = 0


class TrafficTarget(Frozen):
    """One entry of the service's traffic list.

    ``kind="latest"`` floats with the newest Ready revision (``revision`` is then empty);
    ``kind="revision"`` is pinned to ``revision``.
    """

    kind: Literal["latest", "revision"]
    revision: str = ""
    percent: int = Field(ge=0, le=100)
    tag: str = ""


class ServiceState(Frozen):
    ref: ServiceRef
    etag: str
    generation: int = 0
    traffic: tuple[TrafficTarget, ...]
    revisions: tuple[Revision, ...]
    annotations: dict[str, str] = Field(default_factory=dict)
    latest_ready_revision: str = ""
    uri: str = ""

    def revision(self, name: str) -> Revision | None:
        for rev in self.revisions:
            if rev.name == name:
                return rev
        return None

    def percent_by_revision(self) -> dict[str, int]:
        """Effective share of traffic per revision, with LATEST resolved to the latest Ready one."""
        shares: dict[str, int] = {}
        for target in self.traffic:
            name = target.revision if target.kind == "revision" else self.latest_ready_revision
            if name and target.percent:
                shares[name] = shares.get(name, 0) + target.percent
        return shares

    def serving(self) -> list[str]:
        """Revisions that receive traffic, largest share first, then newest first."""
        shares = self.percent_by_revision()
        created = {r.name: r.create_time.timestamp() for r in self.revisions}
        return sorted(shares, key=lambda n: (shares[n], created.get(n, 0.0)), reverse=True)
