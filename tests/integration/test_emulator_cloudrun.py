"""The Cloud Run Admin API v2 emulator, exercised through the real ``google-cloud-run`` REST client.

These tests pin the behaviour the controller's Cloud Run adapter relies on: paging, the etag
precondition (stale → 409 Conflict, concurrent writers → exactly one wins), LRO handling in both
done-at-once and polled modes, traffic validation and the ``template.revision`` echo trap.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import field_mask_pb2, json_format

from controller.emulator.cloudrun import (
    SAMPLE_PROJECT,
    SAMPLE_REGION,
    SAMPLE_REVISIONS,
    SAMPLE_SERVICE,
    CloudRunEmulator,
    RevisionSpec,
    seed_sample,
)

P, R, S = SAMPLE_PROJECT, SAMPLE_REGION, SAMPLE_SERVICE
NAME = f"projects/{P}/locations/{R}/services/{S}"
OLD, GOOD, BAD = SAMPLE_REVISIONS  # 00040 (oldest), 00041, 00042 (newest, serving)
REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
SUCCEEDED = run_v2.Condition.State.CONDITION_SUCCEEDED


@pytest.fixture
def emu() -> Iterator[CloudRunEmulator]:
    with CloudRunEmulator(page_size=2) as emulator:
        seed_sample(emulator)
        yield emulator


def make_client(client_class: type[Any], url: str) -> Any:
    """A real REST client pointed at the emulator, exactly as the controller builds one."""
    return client_class(
        transport="rest",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": url},
    )


def _close(client: Any) -> None:
    """Close the client's HTTP session and, if LRO polling created one, the operations client's.

    ``transport.close()`` does not reach the operations client (its own ``AuthorizedSession``,
    whose ``close()`` on the transport raises NotImplementedError), so it is closed here.
    """
    transport = client.transport
    ops_client = getattr(transport, "_operations_client", None)
    if ops_client is not None:
        ops_client.transport._session.close()
    transport.close()


@pytest.fixture
def services(emu: CloudRunEmulator) -> Iterator[Any]:
    client = make_client(run_v2.ServicesClient, emu.url)
    yield client
    _close(client)


@pytest.fixture
def revisions(emu: CloudRunEmulator) -> Iterator[Any]:
    client = make_client(run_v2.RevisionsClient, emu.url)
    yield client
    _close(client)


def rollback_to(svc: Any, revision: str) -> Any:
    """The controller's update: one revision at 100 %, ``template.revision`` cleared."""
    svc.template.revision = ""
    svc.traffic = [run_v2.TrafficTarget(type_=REVISION, revision=revision, percent=100)]
    return svc


def op_polls(emu: CloudRunEmulator) -> int:
    return sum(1 for method, path in emu.requests if method == "GET" and "/operations/" in path)


# -- reads ---------------------------------------------------------------------------------


def test_get_service_has_realistic_fields(services: Any) -> None:
    svc = services.get_service(name=NAME)

    assert svc.name == NAME
    assert svc.generation == 1
    assert svc.etag.startswith('"') and svc.etag.endswith('"') and len(svc.etag) > 10
    assert svc.latest_ready_revision == f"{NAME}/revisions/{BAD}"
    assert svc.latest_created_revision == f"{NAME}/revisions/{BAD}"
    assert svc.template.revision == ""  # unnamed unless the service was deployed with named revisions
    assert "@sha256:" in svc.template.containers[0].image
    assert [(t.type_, t.percent) for t in svc.traffic] == [(LATEST, 100)]
    assert [(t.type_, t.percent) for t in svc.traffic_statuses] == [(LATEST, 100)]
    assert svc.terminal_condition.type_ == "Ready"
    assert svc.terminal_condition.state == SUCCEEDED
    assert {c.type_ for c in svc.conditions} == {"RoutesReady", "ConfigurationsReady"}
    assert svc.uri.startswith("https://checkout-") and svc.uri.endswith(".a.run.app")
    assert len(svc.urls) == 2
    assert svc.reconciling is False
    assert svc.observed_generation == 1
    assert svc.labels == {"team": "payments"}
    assert svc.create_time < svc.update_time


def test_revision_images_differ_and_get_revision_works(revisions: Any) -> None:
    good = revisions.get_revision(name=f"{NAME}/revisions/{GOOD}")
    bad = revisions.get_revision(name=f"{NAME}/revisions/{BAD}")

    assert good.name == f"{NAME}/revisions/{GOOD}"
    assert good.service == NAME
    assert good.containers[0].image != bad.containers[0].image
    assert good.create_time < bad.create_time
    ready = next(c for c in good.conditions if c.type_ == "Ready")
    assert ready.state == SUCCEEDED


def test_list_revisions_follows_page_tokens_and_is_not_in_creation_order(emu: CloudRunEmulator, revisions: Any) -> None:
    listed = list(revisions.list_revisions(parent=NAME))  # emulator page size is 2

    names = [r.name.rsplit("/", 1)[1] for r in listed]
    assert sorted(names) == sorted(SAMPLE_REVISIONS)
    times = [r.create_time for r in listed]
    assert times != sorted(times)
    assert times != sorted(times, reverse=True)
    list_calls = [p for m, p in emu.requests if m == "GET" and p.split("?")[0].endswith("/revisions")]
    assert len(list_calls) == 2
    assert "pageToken=" not in list_calls[0]
    assert "pageToken=" in list_calls[1]


def test_list_revisions_honours_requested_page_size(emu: CloudRunEmulator, revisions: Any) -> None:
    pager = revisions.list_revisions(request={"parent": NAME, "page_size": 1})
    pages = [[r.name for r in page.revisions] for page in pager.pages]

    assert [len(p) for p in pages] == [1, 1, 1]
    assert len({n for p in pages for n in p}) == 3


def test_list_services_pages(emu: CloudRunEmulator, services: Any) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for name in ("billing", "search"):
        emu.add_service(P, R, name, revisions=[RevisionSpec(f"{name}-00001-aaa", start)])
    emu.add_service(P, "europe-west1", "elsewhere", revisions=[RevisionSpec("e-1", start)])

    listed = list(services.list_services(parent=f"projects/{P}/locations/{R}"))

    assert sorted(s.name.rsplit("/", 1)[1] for s in listed) == ["billing", "checkout", "search"]


def test_unknown_service_and_revision_are_not_found(services: Any, revisions: Any) -> None:
    with pytest.raises(gexc.NotFound, match="Resource 'missing' of kind 'SERVICE'"):
        services.get_service(name=f"projects/{P}/locations/{R}/services/missing")
    with pytest.raises(gexc.NotFound, match="of kind 'REVISION'"):
        revisions.get_revision(name=f"{NAME}/revisions/checkout-00099-zzz")
    missing = run_v2.Service(name=f"projects/{P}/locations/{R}/services/missing")
    with pytest.raises(gexc.NotFound):
        services.update_service(service=rollback_to(missing, GOOD))


def test_error_bodies_match_the_real_api_shape(emu: CloudRunEmulator) -> None:
    with requests.Session() as http:
        missing = http.get(f"{emu.url}/v2/projects/{P}/locations/{R}/services/missing")
        stale = http.patch(
            f"{emu.url}/v2/{NAME}?%24alt=json%3Benum-encoding%3Dint",
            data=json.dumps({"traffic": [{"type": 2, "revision": GOOD, "percent": 100}], "etag": '"stale"'}),
            headers={"Content-Type": "application/json"},
        )

    assert missing.status_code == 404
    assert missing.json() == {
        "error": {
            "code": 404,
            "status": "NOT_FOUND",
            "message": f"Resource 'missing' of kind 'SERVICE' in region '{R}' in project '{P}' does not exist.",
        }
    }
    assert stale.status_code == 409
    assert stale.json() == {
        "error": {
            "code": 409,
            "status": "ABORTED",
            "message": "The etag provided does not match the current etag of the resource.",
        }
    }


# -- updates -------------------------------------------------------------------------------


def test_rollback_done_immediately(emu: CloudRunEmulator, services: Any) -> None:
    svc = services.get_service(name=NAME)
    etag_before = svc.etag
    svc.annotations["rollback-controller/last-good"] = GOOD

    op = services.update_service(service=rollback_to(svc, GOOD))
    result = op.result(timeout=10)

    assert op_polls(emu) == 0  # done:true in the PATCH reply means no polling at all
    assert op.operation.name.startswith(f"projects/{P}/locations/{R}/operations/")
    assert [(t.type_, t.revision, t.percent) for t in result.traffic] == [(REVISION, GOOD, 100)]
    assert [(t.revision, t.percent) for t in result.traffic_statuses] == [(GOOD, 100)]
    assert result.generation == 2
    assert result.observed_generation == 2
    assert result.etag != etag_before
    assert result.annotations["rollback-controller/last-good"] == GOOD
    assert op.metadata.name == NAME
    assert emu.traffic(P, R, S) == [{"type": "REVISION", "revision": GOOD, "percent": 100, "tag": ""}]
    assert emu.applied_traffic_changes(P, R, S) == 1
    assert services.get_service(name=NAME).etag == result.etag


def test_rollback_with_polled_operation() -> None:
    with CloudRunEmulator(operation_polls=2) as emu:
        seed_sample(emu)
        client = make_client(run_v2.ServicesClient, emu.url)
        try:
            svc = client.get_service(name=NAME)
            op = client.update_service(service=rollback_to(svc, GOOD))
            pending = emu.service(P, R, S)
            result = op.result(timeout=10)
        finally:
            _close(client)

        assert pending["reconciling"] is True
        assert pending["trafficStatuses"] == [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}]
        assert op_polls(emu) == 2  # done:false once more, then done:true
        assert [(t.revision, t.percent) for t in result.traffic] == [(GOOD, 100)]
        assert [(t.revision, t.percent) for t in result.traffic_statuses] == [(GOOD, 100)]
        assert result.reconciling is False
        assert emu.service(P, R, S)["observedGeneration"] == "2"


def test_polled_operation_json_parses_strictly(emu: CloudRunEmulator) -> None:
    emu.operation_polls = 2
    body = {"traffic": [{"type": 2, "revision": GOOD, "percent": 100, "tag": "stable"}]}
    with requests.Session() as http:
        # A body without a template needs a mask: without one the PATCH replaces the whole service.
        started = http.patch(f"{emu.url}/v2/{NAME}?updateMask=traffic", data=json.dumps(body)).json()
        polls = [http.get(f"{emu.url}/v2/{started['name']}").json() for _ in range(3)]

    assert [started["done"], *(p["done"] for p in polls)] == [False, False, True, True]
    for payload in (started, *polls):
        # What google.api_core.operations_v1 does for polls: unknown keys are an error.
        op = json_format.Parse(json.dumps(payload), operations_pb2.Operation())
        assert op.metadata.type_url == "type.googleapis.com/google.cloud.run.v2.Service"
    assert polls[-1]["response"]["trafficStatuses"][0]["uri"].startswith("https://stable---")


def test_stale_etag_is_conflict_and_changes_nothing(emu: CloudRunEmulator, services: Any) -> None:
    svc = services.get_service(name=NAME)
    emu.set_traffic(P, R, S, [{"type": "REVISION", "revision": OLD, "percent": 100}])

    with pytest.raises(gexc.Conflict, match="etag provided does not match"):
        services.update_service(service=rollback_to(svc, GOOD))

    assert emu.traffic(P, R, S)[0]["revision"] == OLD
    assert [p.outcome for p in emu.patches] == ["conflict"]
    assert emu.applied_traffic_changes(P, R, S) == 0


def test_before_patch_hook_simulates_a_race(emu: CloudRunEmulator, services: Any) -> None:
    seen: list[str] = []

    def concurrent_writer(name: str) -> None:
        seen.append(name)
        if len(seen) == 1:  # only the first PATCH loses the race
            emu.set_traffic(P, R, S, [{"type": "LATEST", "percent": 100}])

    emu.before_patch = concurrent_writer
    with pytest.raises(gexc.Conflict):
        services.update_service(service=rollback_to(services.get_service(name=NAME), GOOD))
    services.update_service(service=rollback_to(services.get_service(name=NAME), GOOD)).result()

    assert seen == [NAME, NAME]
    assert [p.outcome for p in emu.patches] == ["conflict", "applied"]
    assert emu.applied_traffic_changes(P, R, S) == 1


def test_concurrent_updates_with_same_etag_exactly_one_wins(emu: CloudRunEmulator) -> None:
    # Both PATCHes are held at the hook until both have arrived, then race for the state lock.
    barrier = threading.Barrier(2, timeout=5)

    def hold(_name: str) -> None:
        barrier.wait()

    emu.before_patch = hold
    clients = [make_client(run_v2.ServicesClient, emu.url) for _ in range(2)]
    try:
        snapshot = clients[0].get_service(name=NAME)

        def attempt(i: int) -> str:
            svc = run_v2.Service.deserialize(run_v2.Service.serialize(snapshot))
            try:
                clients[i].update_service(service=rollback_to(svc, (GOOD, OLD)[i])).result(10)
            except gexc.Conflict:
                return "conflict"
            return "applied"

        with ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = sorted(pool.map(attempt, range(2), timeout=20))
    finally:
        for client in clients:
            _close(client)

    assert outcomes == ["applied", "conflict"]
    assert sorted(p.outcome for p in emu.patches) == ["applied", "conflict"]
    assert emu.applied_traffic_changes(P, R, S) == 1


@pytest.mark.parametrize(
    ("traffic", "message"),
    [
        pytest.param([(GOOD, 60), (BAD, 30)], "add up to 100; got 90", id="sum-90"),
        pytest.param([("checkout-00099-zzz", 100)], "does not exist", id="unknown-revision"),
        pytest.param([(GOOD, 100, "t"), (BAD, 0, "t")], "more than one traffic target", id="dup-tag"),
        pytest.param([(GOOD, 101)], "between 0 and 100", id="percent-101"),
    ],
)
def test_invalid_traffic_is_bad_request(
    emu: CloudRunEmulator, services: Any, traffic: list[tuple[Any, ...]], message: str
) -> None:
    svc = services.get_service(name=NAME)
    svc.template.revision = ""
    svc.traffic = [
        run_v2.TrafficTarget(type_=REVISION, revision=t[0], percent=t[1], tag=(t[2:] or ("",))[0]) for t in traffic
    ]

    with pytest.raises(gexc.BadRequest, match=message):
        services.update_service(service=svc)

    assert emu.service(P, R, S)["generation"] == "1"
    assert [p.outcome for p in emu.patches] == ["invalid"]


@pytest.mark.parametrize("polls", [0, 2])
def test_target_not_ready_fails_the_operation(emu: CloudRunEmulator, services: Any, polls: int) -> None:
    emu.operation_polls = polls
    emu.set_revision_ready(P, R, S, GOOD, ready=False)
    before = emu.service(P, R, S)

    op = services.update_service(service=rollback_to(services.get_service(name=NAME), GOOD))
    with pytest.raises(gexc.FailedPrecondition, match=f"Revision '{GOOD}' is not ready"):
        op.result(timeout=10)

    assert emu.service(P, R, S) == before
    assert [p.outcome for p in emu.patches] == ["failed"]
    assert op_polls(emu) == polls


def test_validate_only_changes_nothing(emu: CloudRunEmulator, services: Any) -> None:
    before = emu.service(P, R, S)
    request = run_v2.UpdateServiceRequest(
        service=rollback_to(services.get_service(name=NAME), GOOD), validate_only=True
    )

    op = services.update_service(request=request)

    assert op.done()
    assert emu.service(P, R, S) == before
    [patch] = emu.patches
    assert (patch.outcome, patch.validate_only, patch.traffic_changed) == ("validated", True, True)
    assert emu.applied_traffic_changes(P, R, S) == 0


def test_update_mask_keeps_fields_outside_it(emu: CloudRunEmulator, services: Any) -> None:
    emu.reset()
    start = datetime(2024, 1, 1, tzinfo=UTC)
    emu.add_service(
        P,
        R,
        S,
        revisions=[RevisionSpec(GOOD, start), RevisionSpec(BAD, start + timedelta(days=1))],
        annotations={"keep": "me"},
    )
    etag = emu.etag(P, R, S)
    minimal = run_v2.Service(name=NAME, etag=etag)
    rollback_to(minimal, GOOD)

    op = services.update_service(service=minimal, update_mask=field_mask_pb2.FieldMask(paths=["traffic"]))

    assert op.result(timeout=10).annotations == {"keep": "me"}
    assert emu.patches[-1].update_mask == ("traffic",)
    assert emu.traffic(P, R, S)[0]["revision"] == GOOD


def test_echoed_template_revision_with_other_config_is_conflict(emu: CloudRunEmulator, services: Any) -> None:
    svc = services.get_service(name=NAME)
    # Unchanged echo of the current template is harmless…
    svc.traffic = [run_v2.TrafficTarget(type_=REVISION, revision=GOOD, percent=100)]
    services.update_service(service=svc).result(timeout=10)
    # …but naming an existing revision whose configuration differs is the read-modify-write trap.
    svc = services.get_service(name=NAME)
    svc.template.revision = GOOD  # the template still carries 00042's image
    svc.traffic = [run_v2.TrafficTarget(type_=REVISION, revision=OLD, percent=100)]

    with pytest.raises(gexc.Conflict, match=f"Revision named '{GOOD}' with different configuration already exists"):
        services.update_service(service=svc)

    assert emu.traffic(P, R, S)[0]["revision"] == GOOD
    assert [p.outcome for p in emu.patches] == ["applied", "conflict"]


# -- python helpers --------------------------------------------------------------------------


def test_helpers_track_deploys_readiness_and_etags(emu: CloudRunEmulator, services: Any) -> None:
    etag0 = emu.etag(P, R, S)
    emu.add_revision(P, R, S, RevisionSpec("checkout-00043-new", datetime(2024, 7, 1, tzinfo=UTC)))
    etag1 = emu.etag(P, R, S)
    emu.set_revision_ready(P, R, S, "checkout-00043-new", ready=False)
    svc = services.get_service(name=NAME)

    assert len({etag0, etag1, svc.etag}) == 3
    assert svc.latest_created_revision.endswith("/checkout-00043-new")
    assert svc.latest_ready_revision.endswith(f"/{BAD}")  # LATEST skips the failed revision
    assert svc.generation == 2
    with pytest.raises(ValueError, match="add up to 100"):
        emu.set_traffic(P, R, S, [{"revision": GOOD, "percent": 50}])
    with pytest.raises(ValueError, match="timezone-aware"):
        emu.add_revision(P, R, S, RevisionSpec("naive", datetime(2024, 7, 2)))


def test_warm_get_and_patch_round_trip_is_fast(emu: CloudRunEmulator, services: Any) -> None:
    services.get_service(name=NAME)  # warm the connection
    timings = []
    for i in range(10):
        began = time.perf_counter()
        svc = services.get_service(name=NAME)
        services.update_service(service=rollback_to(svc, (GOOD, OLD)[i % 2])).result(timeout=10)
        timings.append(time.perf_counter() - began)

    # Typically ~7 ms, most of it client-side; the bound only catches pathologies (Nagle, no keep-alive).
    assert statistics.median(timings) < 0.05
    assert emu.applied_traffic_changes(P, R, S) == 10
