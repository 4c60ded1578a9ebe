"""The Cloud Run emulator's fault injection (``emulator.faults``), through the real google-cloud-run client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from google.protobuf import field_mask_pb2, json_format

from controller.emulator.cloudrun import SAMPLE_PROJECT, SAMPLE_REVISIONS, CloudRunEmulator, seed_sample

P, R, S = SAMPLE_PROJECT, "us-central1", "checkout"
NAME = f"projects/{P}/locations/{R}/services/{S}"
GOOD = SAMPLE_REVISIONS[1]
REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION


@pytest.fixture
def emu() -> Iterator[CloudRunEmulator]:
    with CloudRunEmulator() as emulator:
        seed_sample(emulator)
        yield emulator


@pytest.fixture
def services(emu: CloudRunEmulator) -> Iterator[Any]:
    client = run_v2.ServicesClient(
        transport="rest",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": emu.url},
    )
    yield client
    client.transport.close()  # type: ignore[no-untyped-call]


def rollback(services: Any, emu: CloudRunEmulator, **kwargs: Any) -> Any:
    svc = run_v2.Service(
        name=NAME,
        etag=emu.etag(P, R, S),
        traffic=[run_v2.TrafficTarget(type_=REVISION, revision=GOOD, percent=100)],
    )
    mask = field_mask_pb2.FieldMask(paths=["traffic"])
    return services.update_service(service=svc, update_mask=mask, **kwargs)


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (429, gexc.TooManyRequests),
        (500, gexc.InternalServerError),
        (503, gexc.ServiceUnavailable),
        (403, gexc.Forbidden),
        (412, gexc.PreconditionFailed),
    ],
)
def test_injected_errors_are_answered_before_anything_happens(
    emu: CloudRunEmulator, services: Any, status: int, exc: type[Exception]
) -> None:
    emu.faults.error(status, action="update_service")
    with pytest.raises(exc):
        rollback(services, emu)
    assert emu.patches == []  # the PATCH never reached the service
    rollback(services, emu).result(timeout=5)  # consumed: the next one works
    assert emu.traffic(P, R, S)[0]["revision"] == GOOD


def test_errors_match_only_their_action_and_count(emu: CloudRunEmulator, services: Any) -> None:
    emu.faults.error(503, action="get_service", times=2)
    rollback(services, emu).result(timeout=5)  # other actions unaffected
    for _ in range(2):
        with pytest.raises(gexc.ServiceUnavailable):
            services.get_service(name=NAME, retry=None)
    assert services.get_service(name=NAME, retry=None).name == NAME


def test_delay_before_commit_then_a_late_commit(emu: CloudRunEmulator, services: Any) -> None:
    emu.faults.delay(1.0, action="update_service")
    with pytest.raises(requests.exceptions.Timeout):
        rollback(services, emu, timeout=0.3)
    time.sleep(1.0)  # the emulator then handles it: a late PATCH commits, as on a real server
    assert emu.traffic(P, R, S)[0]["revision"] == GOOD


def test_delay_after_commit_loses_the_answer_of_a_committed_write(emu: CloudRunEmulator, services: Any) -> None:
    emu.faults.delay(1.0, action="update_service", after_commit=True)
    with pytest.raises(requests.exceptions.Timeout):
        rollback(services, emu, timeout=0.3)
    assert emu.traffic(P, R, S)[0]["revision"] == GOOD  # committed although the client saw a timeout
    assert [p.outcome for p in emu.patches] == ["applied"]


def test_hung_call_is_released_by_stop(emu: CloudRunEmulator, services: Any) -> None:
    emu.faults.hang(action="get_service")
    errors: list[BaseException] = []

    def call() -> None:
        try:
            services.get_service(name=NAME, retry=None, timeout=30)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()  # hung
    started = time.monotonic()
    emu.faults.release()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - started < 2
    assert errors == []


def test_failing_operation_commits_the_spec_and_fails_with_code_13(emu: CloudRunEmulator, services: Any) -> None:
    emu.faults.fail_operations(message="rollout failed")
    with pytest.raises(gexc.GoogleAPICallError, match="rollout failed") as caught:
        rollback(services, emu).result(timeout=5)
    assert caught.value.grpc_status_code is not None and caught.value.grpc_status_code.value[0] == 13
    served = emu.service(P, R, S)
    assert served["traffic"][0]["revision"] == GOOD  # the spec kept what was asked
    assert served["trafficStatuses"] == [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}]
    assert served["terminalCondition"]["state"] == "CONDITION_FAILED"


def test_slow_operation_reconciles_after_polls(emu: CloudRunEmulator, services: Any) -> None:
    emu.operation_polls = 3
    emu.faults.delay(0.2, action="get_operation", times=3)
    started = time.monotonic()
    rollback(services, emu).result(timeout=10)
    assert time.monotonic() - started >= 0.4


def test_persistent_conflict(emu: CloudRunEmulator, services: Any) -> None:
    emu.faults.conflict_always = True
    for _ in range(3):
        with pytest.raises(gexc.Conflict):
            rollback(services, emu)
    emu.faults.conflict_always = False
    rollback(services, emu).result(timeout=5)


def test_unknown_fields_pass_lenient_reads_and_break_strict_polls(emu: CloudRunEmulator, services: Any) -> None:
    emu.faults.unknown_fields = True
    emu.operation_polls = 2
    assert services.get_service(name=NAME).name == NAME  # run_v2 parses leniently
    op = rollback(services, emu)  # the first PATCH reply is parsed leniently too
    with pytest.raises(json_format.ParseError):
        op.result(timeout=5)  # api-core's operation polls are strict
    assert emu.traffic(P, R, S)[0]["revision"] == GOOD  # although the update was applied


def test_reset_disarms_every_fault(emu: CloudRunEmulator, services: Any) -> None:
    emu.faults.error(503, times=5)
    emu.faults.conflict_always = True
    emu.faults.unknown_fields = True
    emu.reset()
    seed_sample(emu)
    assert services.get_service(name=NAME, retry=None).name == NAME
    rollback(services, emu).result(timeout=5)
