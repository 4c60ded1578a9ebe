"""ID tokens as Cloud Run forwards them, end to end through functions-framework serving ``handle_http``.

Behind Cloud Run IAM (deployed without ``--allow-unauthenticated``) Cloud Run checks the caller's
token and ``roles/run.invoker`` itself, then forwards the token with its signature replaced by the
literal ``SIGNATURE_REMOVED_BY_GOOGLE`` (Cloud Run troubleshooting, "signature removed"). When a
caller sends ``X-Serverless-Authorization``, Cloud Run checks only that header and forwards
``Authorization`` untouched. These tests forge exactly those forwarded headers: the claims are
minted by a local key whose certificate a local server publishes (``ROLLBACK_AUTH_CERTS_URL``), and
the signature is stripped the way Cloud Run strips it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from tokens import google_claims, make_key, serve_certs

from controller.emulator.cloudrun import CloudRunEmulator, seed_sample
from controller.emulator.monitoring import MonitoringEmulator
from controller.emulator.slack import SlackEmulator
from controller.surfaces.demo import PROJECT, REGION, SERVICE, free_port, function_env, start_function, stop_process

FUNCTIONS_URL = "https://us-central1-demo-proj.cloudfunctions.net/rollback-http"
RUN_URL = "https://rollback-http-abc123-uc.a.run.app"
ALICE = "alice@example.com"
MALLORY = "mallory@example.com"  # a run.invoker, but not an allowed principal
KEY = make_key("local-google-1")
STRIPPED = "SIGNATURE_REMOVED_BY_GOOGLE"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
STATUS = {"project": PROJECT, "region": REGION, "service": SERVICE}


def signed(email: str = ALICE, *, audience: str = FUNCTIONS_URL, **overrides: Any) -> str:
    return KEY.sign(google_claims(audience, email, **overrides))


def stripped(email: str = ALICE, *, audience: str = FUNCTIONS_URL, **overrides: Any) -> str:
    """The token as Cloud Run hands it to the container: header and claims intact, signature replaced."""
    header_and_claims = signed(email, audience=audience, **overrides).rsplit(".", 1)[0]
    return f"{header_and_claims}.{STRIPPED}"


@dataclass
class Functions:
    trusting: int  # ROLLBACK_AUTH_TRUST_PLATFORM=true
    strict: int  # the default: every token's signature is verified
    logs: list[Path]

    def status(self, port: int, headers: dict[str, str]) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{port}/status", params=STATUS, headers=headers, timeout=30)

    def log_text(self) -> str:
        return "".join(p.read_text(encoding="utf-8") for p in self.logs)


@pytest.fixture(scope="module")
def functions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Functions]:
    tmp = tmp_path_factory.mktemp("platform-auth")
    with (
        serve_certs(KEY) as certs_url,
        CloudRunEmulator() as run,
        SlackEmulator() as slack,
        MonitoringEmulator() as monitoring,
    ):
        seed_sample(run)
        base = function_env(run.url, slack.api_url, monitoring=monitoring.target)
        base = {k: v for k, v in base.items() if k.lower() not in PROXY_VARS}
        auth = {
            "ROLLBACK_AUTH_AUDIENCE": f"{FUNCTIONS_URL}, {RUN_URL}",
            "ROLLBACK_ALLOWED_PRINCIPALS": ALICE,
            "ROLLBACK_AUTH_CERTS_URL": certs_url,
        }
        ports = free_port(), free_port()
        logs = [tmp / "trusting.log", tmp / "strict.log"]
        trusting = start_function(
            "handle_http", ports[0], {**base, **auth, "ROLLBACK_AUTH_TRUST_PLATFORM": "true"}, log_path=logs[0]
        )
        try:
            strict = start_function("handle_http", ports[1], {**base, **auth}, log_path=logs[1])
            try:
                yield Functions(ports[0], ports[1], logs)
            finally:
                stop_process(strict)
        finally:
            stop_process(trusting)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:  # a developer's proxy must not intercept 127.0.0.1
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def bearer(token: str) -> str:
    return f"Bearer {token}"


# --------------------------------------------------------------------------- trusting the platform


@pytest.mark.parametrize("header", ["Authorization", "X-Serverless-Authorization"])
def test_stripped_token_is_accepted_when_trusting_the_platform(functions: Functions, header: str) -> None:
    response = functions.status(functions.trusting, {header: bearer(stripped())})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("token", "status", "error"),
    [
        pytest.param(
            lambda: stripped(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
            401,
            "expired_token",
            id="expired",
        ),
        pytest.param(lambda: stripped(iat=int(time.time()) + 600), 401, "invalid_token", id="issued-in-future"),
        pytest.param(lambda: stripped(nbf=int(time.time()) + 600), 401, "invalid_token", id="not-before"),
        pytest.param(lambda: stripped(iss="https://evil.example"), 401, "invalid_token", id="wrong-issuer"),
        pytest.param(lambda: stripped(email_verified=False), 401, "invalid_token", id="email-unverified"),
        pytest.param(lambda: stripped(audience="https://other.example/fn"), 403, "wrong_audience", id="audience"),
        pytest.param(lambda: stripped(MALLORY), 403, "forbidden_principal", id="not-allowed"),
        pytest.param(lambda: stripped(iss=["https://accounts.google.com"]), 401, "invalid_token", id="iss-list"),
    ],
)
def test_every_claim_is_still_checked_on_a_stripped_token(
    functions: Functions, token: Any, status: int, error: str
) -> None:
    response = functions.status(functions.trusting, {"Authorization": bearer(token())})
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


def test_signed_tokens_are_still_verified_when_trusting_the_platform(functions: Functions) -> None:
    assert functions.status(functions.trusting, {"Authorization": bearer(signed())}).status_code == 200
    forged = make_key(KEY.kid).sign(google_claims(FUNCTIONS_URL, ALICE))  # same kid, unpublished key
    response = functions.status(functions.trusting, {"Authorization": bearer(forged)})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_identity_comes_from_the_header_cloud_run_checked(functions: Functions) -> None:
    # Cloud Run checked X-Serverless-Authorization (mallory may invoke) and forwarded
    # Authorization untouched: a stripped token there was never checked by anyone.
    headers = {"X-Serverless-Authorization": bearer(stripped(MALLORY)), "Authorization": bearer(stripped(ALICE))}
    response = functions.status(functions.trusting, headers)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden_principal"
    assert MALLORY in response.json()["message"]


def test_an_unchecked_authorization_header_is_ignored_even_when_signed(functions: Functions) -> None:
    # With X-Serverless-Authorization present, Authorization may carry anything (an API key for
    # the app, another service's token): the identity is the checked header's.
    headers = {"X-Serverless-Authorization": bearer(stripped(ALICE)), "Authorization": "Basic dXNlcjpwYXNz"}
    assert functions.status(functions.trusting, headers).status_code == 200


def test_either_audience_of_the_list_is_accepted(functions: Functions) -> None:
    for audience in (FUNCTIONS_URL, RUN_URL):
        response = functions.status(functions.strict, {"Authorization": bearer(signed(audience=audience))})
        assert response.status_code == 200, (audience, response.text)


# --------------------------------------------------------------------------- the default: verify everything


def test_stripped_token_without_the_setting_is_401_naming_it(functions: Functions) -> None:
    token = stripped()
    response = functions.status(functions.strict, {"Authorization": bearer(token)})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert "ROLLBACK_AUTH_TRUST_PLATFORM" in response.json()["message"]
    assert token.rsplit(".", 1)[0] not in functions.log_text()  # never logged


def test_signed_token_with_a_list_as_issuer_is_401_not_500(functions: Functions) -> None:
    for port in (functions.strict, functions.trusting):
        token = signed(iss=["https://accounts.google.com", "accounts.google.com"])
        response = functions.status(port, {"Authorization": bearer(token)})
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_token"


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"aud": [FUNCTIONS_URL]}, id="aud-list"),
        pytest.param({"email": ["alice@example.com"]}, id="email-list"),
        pytest.param({"email_verified": "true"}, id="email-verified-string"),
        pytest.param({"exp": str(int(time.time()) + 3600)}, id="exp-string"),
        pytest.param({"sub": 110169484474386276334}, id="sub-number"),
        pytest.param({"iss": {"a": 1}}, id="iss-object"),
    ],
)
def test_every_claim_is_type_checked_first(functions: Functions, overrides: dict[str, Any]) -> None:
    token = KEY.sign({**google_claims(FUNCTIONS_URL, ALICE), **overrides})
    response = functions.status(functions.strict, {"Authorization": bearer(token)})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_token"
