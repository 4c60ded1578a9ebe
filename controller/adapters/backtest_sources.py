"""Where a backtest reads the past: a service's revisions from Cloud Run, and Monitoring's raw client.

``read_revisions`` lists every revision (create time, readiness) through ``run_v2``;
``monitoring_client`` builds the ``MetricServiceClient`` the replay pages time series with
(plaintext to an emulator endpoint, else Google with Application Default Credentials). The
client libraries are imported inside the functions so importing this module stays cheap.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from controller.core.state import Revision, ServiceRef

__all__ = ["monitoring_client", "read_revisions"]


def read_revisions(endpoint: str | None, ref: ServiceRef, timeout: float = 30.0) -> list[Revision]:
    """Every revision of the service (the pager follows ``nextPageToken``), oldest first."""
    from google.cloud import run_v2

    kwargs: dict[str, Any] = {"transport": "rest"}
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        kwargs["credentials"] = AnonymousCredentials()  # type: ignore[no-untyped-call]
        kwargs["client_options"] = {"api_endpoint": endpoint}
    client = run_v2.RevisionsClient(**kwargs)
    out: list[Revision] = []
    for rev in client.list_revisions(parent=ref.resource_name, timeout=timeout):
        ready = any(c.type_ == "Ready" and c.state.name == "CONDITION_SUCCEEDED" for c in rev.conditions)
        created = rev.create_time
        out.append(
            Revision(
                name=rev.name.rsplit("/", 1)[-1],
                create_time=datetime.fromtimestamp(created.timestamp(), UTC),
                ready=ready,
            )
        )
    return sorted(out, key=lambda r: r.create_time)


def monitoring_client(endpoint: str | None) -> Any:
    """A ``MetricServiceClient``: plaintext to ``endpoint`` (the emulator), else Google with ADC."""
    from google.cloud import monitoring_v3

    if endpoint:
        import grpc
        from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

        return monitoring_v3.MetricServiceClient(
            transport=MetricServiceGrpcTransport(channel=grpc.insecure_channel(endpoint))
        )
    return monitoring_v3.MetricServiceClient()
