"""controller.auth: ID-token and Slack-signature verification, against real keys and a real server.

Tokens are minted with RSA keys generated here and signed by google-auth's own signer; their
certificates (self-signed x509, the form Google's v1 certs URL serves) are served over HTTP on
127.0.0.1 with a Cache-Control header, so the fetch, the cache and the verification run for real.
Time is an injected fake clock. The Slack cases use Slack's documented worked example and a
captured block_actions request (copied from the project's wire notes, 05-slack.md).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from tokens import SigningKey, make_key

from controller.adapters.auth import (
    CERTS_FAILURE_TTL_SECONDS,
    CERTS_MIN_REFETCH_INTERVAL_SECONDS,
    CLOCK_SKEW_SECONDS,
    GOOGLE_CERTS_URL,
    AuthConfig,
    AuthError,
    FetchedCerts,
    IdTokenVerifier,
    Principal,
    SlackVerifier,
    fetch_certs_over_http,
)

NOW = 1_750_000_000.0
AUDIENCE = "https://europe-west1-demo-project.cloudfunctions.net/rollback"
ALLOWED = (
    "alice@example.com",
    "*@corp.example.org",
    "deployer@demo-project.iam.gserviceaccount.com",
)
SKEW = int(CLOCK_SKEW_SECONDS)
DROP = object()  # a claim override that removes the claim


# --------------------------------------------------------------------------- keys and tokens


@dataclass(frozen=True)
class Keys:
    google: SigningKey
    rotated: SigningKey  # published later: key rotation
    attacker: SigningKey  # never published


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(google=make_key("google-1"), rotated=make_key("google-2"), attacker=make_key("evil"))


def claims(**overrides: object) -> dict[str, Any]:
    """A Google ID token's claims as issued for gcloud/metadata-server callers, at NOW."""
    base: dict[str, Any] = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "azp": "32555940559.apps.googleusercontent.com",
        "sub": "110169484474386276334",
        "email": "alice@example.com",
        "email_verified": True,
        "iat": int(NOW) - 60,
        "exp": int(NOW) + 3540,
    }
    for name, value in overrides.items():
        if value is DROP:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: object) -> str:
    return b64(json.dumps(value).encode())


def hs256_forgery(cert_pem: str, kid: str) -> str:
    """The classic algorithm-confusion attack: HMAC-SHA256 keyed with the *public* certificate."""
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64json(claims())}"
    mac = hmac.new(cert_pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def unsigned(kid: str) -> str:
    return f"{b64json({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64json(claims())}."


# --------------------------------------------------------------------------- local certs server


@dataclass
class CertsEndpoint:
    """What the local server answers; tests change it between requests."""

    certs: dict[str, str]
    cache_control: str | None = "public, max-age=19263, must-revalidate, no-transform"
    status: int = 200
    body: bytes | None = None  # overrides the JSON of `certs`
    redirect_to: str | None = None
    hang: bool = False  # accept, then answer nothing until teardown
    hits: int = 0
    url: str = ""
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _CertsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, endpoint: CertsEndpoint) -> None:
        super().__init__(("127.0.0.1", 0), _CertsHandler)
        self.endpoint = endpoint


class _CertsHandler(BaseHTTPRequestHandler):
    server: _CertsServer

    def do_GET(self) -> None:
        ep = self.server.endpoint
        with ep.lock:
            ep.hits += 1
        if ep.hang:
            ep.release.wait(timeout=5)
            return
        body = ep.body if ep.body is not None else json.dumps(ep.certs).encode()
        try:
            self.send_response(ep.status)
            if ep.redirect_to:
                self.send_header("Location", ep.redirect_to)
            if ep.cache_control:
                self.send_header("Cache-Control", ep.cache_control)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (timeout tests); nothing to answer
            pass

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy from the developer's environment must not intercept 127.0.0.1.
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def certs(keys: Keys) -> Iterator[CertsEndpoint]:
    endpoint = CertsEndpoint(certs={keys.google.kid: keys.google.cert_pem})
    server = _CertsServer(endpoint)
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}/oauth2/v1/certs"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield endpoint
    finally:
        endpoint.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/oauth2/v1/certs"


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def config_for(url: str, **overrides: Any) -> AuthConfig:
    values: dict[str, Any] = {
        "audience": AUDIENCE,
        "allowed_principals": ALLOWED,
        "certs_url": url,
    }
    values.update(overrides)
    return AuthConfig(**values)


@pytest.fixture
def verifier(certs: CertsEndpoint, clock: FakeClock) -> IdTokenVerifier:
    return IdTokenVerifier(config_for(certs.url), clock=clock)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def refusal(verifier: IdTokenVerifier, header: str | None) -> AuthError:
    with pytest.raises(AuthError) as caught:
        verifier.verify(header)
    return caught.value


# --------------------------------------------------------------------------- configuration


class TestConfig:
    def test_from_env_reads_trims_and_drops_empties(self) -> None:
        config = AuthConfig.from_env(
            {
                "ROLLBACK_AUTH_AUDIENCE": f"  {AUDIENCE} ",
                "ROLLBACK_ALLOWED_PRINCIPALS": " Alice@Example.com, ,*@corp.example.org,, ",
                "ROLLBACK_AUTH_CERTS_URL": "http://127.0.0.1:8089/certs",
                "SLACK_SIGNING_SECRET": " s3cr3t-value ",
                "ROLLBACK_SLACK_ALLOWED_USERS": "U0123USER, W0456ABCD ,",
            }
        )
        assert config.audience == AUDIENCE
        assert config.allowed_principals == ("alice@example.com", "*@corp.example.org")
        assert config.certs_url == "http://127.0.0.1:8089/certs"
        assert config.slack_signing_secret is not None
        assert config.slack_signing_secret.get_secret_value() == "s3cr3t-value"
        assert config.slack_allowed_users == ("U0123USER", "W0456ABCD")
        assert config.id_token_configured
        assert config.slack_configured
        assert "s3cr3t-value" not in repr(config)
        assert "s3cr3t-value" not in str(config.model_dump())

    def test_empty_environment_is_closed_not_open(self) -> None:
        config = AuthConfig.from_env({"ROLLBACK_AUTH_AUDIENCE": "  ", "SLACK_SIGNING_SECRET": ""})
        assert config.audience is None
        assert config.allowed_principals == ()
        assert config.certs_url == GOOGLE_CERTS_URL
        assert config.slack_signing_secret is None
        assert not config.id_token_configured
        assert not config.slack_configured

    @pytest.mark.parametrize(
        "entry",
        [
            "alice",
            "*",
            "*@",
            "@example.com",
            "alice@",
            "alice@example",
            "*@*.example.com",
            "alice@*",
            "*.example.com",
            "a b@example.com",
            "alice@exa mple.com",
            "al*ce@example.com",
            "alice@example.com;bob@example.com",
        ],
    )
    def test_malformed_principal_is_named(self, entry: str) -> None:
        with pytest.raises(ValueError, match="ROLLBACK_ALLOWED_PRINCIPALS") as caught:
            AuthConfig.from_env({"ROLLBACK_ALLOWED_PRINCIPALS": f"alice@example.com,{entry}"})
        assert repr(entry) in str(caught.value)

    @pytest.mark.parametrize("entry", ["@alice", "alice@example.com", "u0123abcd", "U1"])
    def test_malformed_slack_user_is_named(self, entry: str) -> None:
        with pytest.raises(ValueError, match="ROLLBACK_SLACK_ALLOWED_USERS") as caught:
            AuthConfig.from_env({"ROLLBACK_SLACK_ALLOWED_USERS": entry})
        assert repr(entry) in str(caught.value)

    @pytest.mark.parametrize(
        "url",
        ["http://certs.example.com/v1/certs", "ftp://127.0.0.1/certs", "https://", "certs.json"],
    )
    def test_certs_url_must_be_https_unless_loopback(self, url: str) -> None:
        with pytest.raises(ValueError, match="ROLLBACK_AUTH_CERTS_URL"):
            AuthConfig.from_env({"ROLLBACK_AUTH_CERTS_URL": url})

    @pytest.mark.parametrize(
        "url",
        [GOOGLE_CERTS_URL, "http://127.0.0.1:8089/c", "http://localhost/c", "http://[::1]:1/c"],
    )
    def test_certs_url_accepted(self, url: str) -> None:
        assert AuthConfig.from_env({"ROLLBACK_AUTH_CERTS_URL": url}).certs_url == url

    def test_blank_secret_refused_when_built_directly(self) -> None:
        with pytest.raises(ValueError, match="SLACK_SIGNING_SECRET"):
            AuthConfig(slack_signing_secret=SecretStr("   "))


# --------------------------------------------------------------------------- ID tokens

HeaderFactory = Callable[[Keys], str | None]


def token_with(**overrides: object) -> HeaderFactory:
    return lambda k: bearer(k.google.sign(claims(**overrides)))


REFUSED: list[Any] = [
    # (header factory, status, error code)
    pytest.param(lambda k: None, 401, "missing_token", id="no-header"),
    pytest.param(lambda k: "", 401, "missing_token", id="empty-header"),
    pytest.param(lambda k: "Bearer", 401, "missing_token", id="bearer-without-token"),
    pytest.param(lambda k: "Bearer    ", 401, "missing_token", id="bearer-blank-token"),
    pytest.param(lambda k: "Basic YWxpY2U6cHc=", 401, "missing_token", id="basic-scheme"),
    pytest.param(lambda k: k.google.sign(claims()), 401, "missing_token", id="token-no-scheme"),
    pytest.param(lambda k: "Bearer not-a-jwt", 401, "invalid_token", id="not-a-jwt"),
    pytest.param(lambda k: "Bearer aaa.bbb", 401, "invalid_token", id="two-segments"),
    pytest.param(lambda k: "Bearer a.b.c.d", 401, "invalid_token", id="four-segments"),
    pytest.param(lambda k: "Bearer !!!.???.###", 401, "invalid_token", id="not-base64url"),
    pytest.param(lambda k: "Bearer a.b.c", 401, "invalid_token", id="undecodable-segments"),
    pytest.param(
        lambda k: bearer(f"{b64json([1])}.{b64json('x')}.{b64(b'sig')}"),
        401,
        "invalid_token",
        id="segments-not-objects",
    ),
    pytest.param(lambda k: bearer("a" * 20_000), 401, "invalid_token", id="huge-token"),
    pytest.param(
        lambda k: bearer(k.attacker.sign(claims(), kid=k.google.kid)),
        401,
        "invalid_token",
        id="forged-signature-same-kid",
    ),
    pytest.param(lambda k: bearer(k.attacker.sign(claims())), 401, "invalid_token", id="unknown-kid"),
    pytest.param(lambda k: bearer(k.google.sign(claims(), kid="")), 401, "invalid_token", id="no-kid"),
    pytest.param(
        lambda k: bearer(hs256_forgery(k.google.cert_pem, k.google.kid)),
        401,
        "invalid_token",
        id="alg-hs256-keyed-with-public-cert",
    ),
    pytest.param(lambda k: bearer(unsigned(k.google.kid)), 401, "invalid_token", id="alg-none-unsigned"),
    pytest.param(
        lambda k: bearer(k.google.sign(claims())[:-6] + "AAAAAA"),
        401,
        "invalid_token",
        id="signature-tampered",
    ),
    pytest.param(
        lambda k: bearer(
            ".".join(
                [
                    k.google.sign(claims()).split(".")[0],
                    b64json(claims(email="alice@example.com", sub="someone-else")),
                    k.google.sign(claims()).split(".")[2],
                ]
            )
        ),
        401,
        "invalid_token",
        id="payload-swapped-under-signature",
    ),
    pytest.param(
        token_with(iat=int(NOW) - 7200, exp=int(NOW) - SKEW - 1),
        401,
        "expired_token",
        id="expired-beyond-skew",
    ),
    pytest.param(
        token_with(iat=int(NOW) + SKEW + 1, exp=int(NOW) + 3600),
        401,
        "invalid_token",
        id="iat-in-future-beyond-skew",
    ),
    pytest.param(token_with(nbf=int(NOW) + SKEW + 60), 401, "invalid_token", id="nbf-in-future"),
    pytest.param(token_with(exp=DROP), 401, "invalid_token", id="exp-missing"),
    pytest.param(token_with(iat=DROP), 401, "invalid_token", id="iat-missing"),
    pytest.param(token_with(exp=str(int(NOW) + 60)), 401, "invalid_token", id="exp-a-string"),
    pytest.param(token_with(exp=True), 401, "invalid_token", id="exp-a-boolean"),
    # A genuine, current token minted for another service: authenticated, not authorized here (403).
    pytest.param(token_with(aud="https://other.example/fn"), 403, "wrong_audience", id="wrong-aud"),
    # Google's ID tokens carry aud as one string: a list or no aud is not the documented form,
    # and every claim's type is checked before any value is compared (401).
    pytest.param(token_with(aud=[AUDIENCE]), 401, "invalid_token", id="aud-as-list"),
    pytest.param(token_with(aud=DROP), 401, "invalid_token", id="aud-missing"),
    pytest.param(token_with(iss=["https://accounts.google.com"]), 401, "invalid_token", id="iss-as-list"),
    # ...but the audience is checked last: anything else wrong with the token still answers 401.
    pytest.param(
        token_with(aud="https://other.example/fn", iat=int(NOW) - 7200, exp=int(NOW) - SKEW - 1),
        401,
        "expired_token",
        id="wrong-aud-and-expired",
    ),
    pytest.param(
        token_with(aud="https://other.example/fn", email_verified=False),
        401,
        "invalid_token",
        id="wrong-aud-and-email-unverified",
    ),
    pytest.param(
        lambda k: bearer(k.attacker.sign(claims(aud="https://other.example/fn"), kid=k.google.kid)),
        401,
        "invalid_token",
        id="wrong-aud-and-forged",
    ),
    pytest.param(token_with(iss="https://evil.example"), 401, "invalid_token", id="wrong-issuer"),
    pytest.param(
        token_with(iss="https://securetoken.google.com/demo"),
        401,
        "invalid_token",
        id="firebase-issuer",
    ),
    pytest.param(token_with(iss=DROP), 401, "invalid_token", id="issuer-missing"),
    pytest.param(token_with(email_verified=False), 401, "invalid_token", id="email-unverified"),
    pytest.param(token_with(email_verified=DROP), 401, "invalid_token", id="email-verified-missing"),
    pytest.param(token_with(email_verified="true"), 401, "invalid_token", id="email-verified-string"),
    pytest.param(token_with(email=DROP), 401, "invalid_token", id="email-missing"),
    pytest.param(token_with(email="a@corp.example.org@evil.io"), 401, "invalid_token", id="email-two-at"),
    pytest.param(token_with(sub=DROP), 401, "invalid_token", id="subject-missing"),
    pytest.param(token_with(email="bob@example.com"), 403, "forbidden_principal", id="principal-not-allowed"),
    pytest.param(
        token_with(email="a@eng.corp.example.org"),
        403,
        "forbidden_principal",
        id="wildcard-subdomain-refused",
    ),
    pytest.param(
        token_with(email="a@corp.example.org.evil.io"),
        403,
        "forbidden_principal",
        id="wildcard-lookalike-suffix-refused",
    ),
    pytest.param(
        token_with(email="a@evilcorp.example.org"),
        403,
        "forbidden_principal",
        id="wildcard-lookalike-prefix-refused",
    ),
    pytest.param(
        token_with(email="alice@example.com.evil.io"),
        403,
        "forbidden_principal",
        id="exact-email-lookalike-refused",
    ),
]


@pytest.mark.parametrize(("make_header", "status", "error"), REFUSED)
def test_refused(
    verifier: IdTokenVerifier,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
    make_header: HeaderFactory,
    status: int,
    error: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="controller.auth")
    header = make_header(keys)
    failure = refusal(verifier, header).failure
    assert (failure.status, failure.error) == (status, error)
    assert failure.message
    if header:
        # Neither the token nor any of its segments leaks into the answer or the logs.
        for piece in [header, *header.removeprefix("Bearer ").split(".")]:
            if len(piece) >= 8:
                assert piece not in failure.message
                assert piece not in caplog.text


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda k: hs256_forgery(k.google.cert_pem, k.google.kid), id="hs256"),
        pytest.param(lambda k: unsigned(k.google.kid), id="none"),
        pytest.param(
            lambda k: k.google.sign(claims()).replace(
                b64json({"typ": "JWT", "alg": "RS256", "kid": "google-1"}),
                b64json({"typ": "JWT", "alg": "RS512", "kid": "google-1"}),
            ),
            id="rs512-header",
        ),
    ],
)
def test_algorithm_is_pinned_before_any_key_is_used(
    verifier: IdTokenVerifier, certs: CertsEndpoint, keys: Keys, make_token: Callable[[Keys], str]
) -> None:
    # Refused by the algorithm check itself, not by luck further down: no certificate is fetched.
    failure = refusal(verifier, bearer(make_token(keys))).failure
    assert (failure.status, failure.error) == (401, "invalid_token")
    assert "RS256" in failure.message
    assert certs.hits == 0


ACCEPTED: list[Any] = [
    pytest.param(token_with(), "alice@example.com", id="exact-email"),
    pytest.param(token_with(email="Alice@Example.COM"), "Alice@Example.COM", id="email-any-case"),
    pytest.param(token_with(email="x@corp.example.org"), "x@corp.example.org", id="wildcard-domain"),
    pytest.param(
        token_with(email="deployer@demo-project.iam.gserviceaccount.com"),
        "deployer@demo-project.iam.gserviceaccount.com",
        id="service-account",
    ),
    pytest.param(token_with(iss="accounts.google.com"), "alice@example.com", id="issuer-no-https"),
    pytest.param(
        token_with(iat=int(NOW) - 3600, exp=int(NOW) - SKEW + 1),
        "alice@example.com",
        id="expired-within-skew",
    ),
    pytest.param(
        token_with(iat=int(NOW) + SKEW - 1, exp=int(NOW) + 3600),
        "alice@example.com",
        id="iat-future-within-skew",
    ),
    pytest.param(token_with(nbf=int(NOW) - 60), "alice@example.com", id="nbf-in-past"),
    pytest.param(lambda k: f"bearer   {k.google.sign(claims())}  ", "alice@example.com", id="scheme-any-case"),
]


@pytest.mark.parametrize(("make_header", "email"), ACCEPTED)
def test_accepted(verifier: IdTokenVerifier, keys: Keys, make_header: HeaderFactory, email: str) -> None:
    assert verifier.verify(make_header(keys)) == Principal(email=email, subject="110169484474386276334")


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"audience": None}, id="audience-unset"),
        pytest.param({"allowed_principals": ()}, id="principals-unset"),
        pytest.param({"audience": None, "allowed_principals": ()}, id="both-unset"),
    ],
)
@pytest.mark.parametrize("with_token", [True, False], ids=["valid-token", "no-token"])
def test_unconfigured_answers_503_before_anything_else(
    certs: CertsEndpoint,
    clock: FakeClock,
    keys: Keys,
    overrides: dict[str, Any],
    with_token: bool,
) -> None:
    verifier = IdTokenVerifier(config_for(certs.url, **overrides), clock=clock)
    header = bearer(keys.google.sign(claims())) if with_token else None
    failure = refusal(verifier, header).failure
    assert (failure.status, failure.error) == (503, "auth_not_configured")
    assert "ROLLBACK_AUTH_AUDIENCE" in failure.message
    assert certs.hits == 0


def _redirect_to_itself(endpoint: CertsEndpoint) -> None:
    endpoint.status, endpoint.redirect_to = 302, endpoint.url + "?again"


class TestCertificates:
    def test_fetched_once_for_many_verifications(
        self, verifier: IdTokenVerifier, certs: CertsEndpoint, keys: Keys, clock: FakeClock
    ) -> None:
        token = bearer(keys.google.sign(claims()))
        for _ in range(25):
            verifier.verify(token)
            clock.advance(10)
        assert certs.hits == 1

    @pytest.mark.parametrize(
        ("cache_control", "kept_for"),
        [
            pytest.param("public, max-age=120, must-revalidate", 120, id="max-age-honoured"),
            pytest.param("max-age=86400", 3600, id="capped-at-1h"),
            pytest.param("no-cache, max-age=0", 60, id="floored-at-60s"),
            pytest.param(None, 3600, id="no-header-1h"),
        ],
    )
    def test_cache_lifetime(
        self,
        verifier: IdTokenVerifier,
        certs: CertsEndpoint,
        keys: Keys,
        clock: FakeClock,
        cache_control: str | None,
        kept_for: int,
    ) -> None:
        certs.cache_control = cache_control
        token = bearer(keys.google.sign(claims(exp=int(NOW) + 7200)))
        verifier.verify(token)
        clock.advance(kept_for - 1)
        verifier.verify(token)
        assert certs.hits == 1
        clock.advance(2)
        verifier.verify(token)
        assert certs.hits == 2

    def test_key_rotation_refetches_for_new_kid(
        self, verifier: IdTokenVerifier, certs: CertsEndpoint, keys: Keys, clock: FakeClock
    ) -> None:
        verifier.verify(bearer(keys.google.sign(claims())))
        certs.certs = {keys.google.kid: keys.google.cert_pem, keys.rotated.kid: keys.rotated.cert_pem}
        clock.advance(CERTS_MIN_REFETCH_INTERVAL_SECONDS)
        assert verifier.verify(bearer(keys.rotated.sign(claims()))).email == "alice@example.com"
        assert certs.hits == 2

    def test_unknown_kids_refetch_at_most_once_per_interval(
        self, verifier: IdTokenVerifier, certs: CertsEndpoint, keys: Keys, clock: FakeClock
    ) -> None:
        verifier.verify(bearer(keys.google.sign(claims())))
        assert refusal(verifier, bearer(keys.attacker.sign(claims()))).failure.status == 401
        assert certs.hits == 1  # just fetched: no point asking again
        clock.advance(CERTS_MIN_REFETCH_INTERVAL_SECONDS)
        for n in range(10):
            bogus = bearer(keys.attacker.sign(claims(), kid=f"made-up-{n}"))
            assert refusal(verifier, bogus).failure.error == "invalid_token"
        assert certs.hits == 2

    @pytest.mark.parametrize(
        "break_endpoint",
        [
            pytest.param(lambda ep: setattr(ep, "status", 500), id="http-500"),
            pytest.param(lambda ep: setattr(ep, "status", 404), id="http-404"),
            pytest.param(lambda ep: setattr(ep, "body", b"<html>oops</html>"), id="not-json"),
            pytest.param(lambda ep: setattr(ep, "body", b"[]"), id="json-list"),
            pytest.param(
                lambda ep: setattr(ep, "body", b'{"keys": [{"kid": "k", "n": "x"}]}'),
                id="v3-jwks-form",
            ),
            pytest.param(lambda ep: setattr(ep, "body", b"{}"), id="empty-map"),
            pytest.param(
                lambda ep: setattr(ep, "body", b'{"google-1": "-----BEGIN CERTIFICATE-----\\nx"}'),
                id="garbage-pem",
            ),
            pytest.param(lambda ep: setattr(ep, "body", b"{" + b" " * (1 << 20) + b"}"), id="huge"),
            pytest.param(_redirect_to_itself, id="redirect-not-followed"),
        ],
    )
    def test_unusable_endpoint_is_503_then_recovers(
        self,
        verifier: IdTokenVerifier,
        certs: CertsEndpoint,
        keys: Keys,
        clock: FakeClock,
        break_endpoint: Callable[[CertsEndpoint], object],
    ) -> None:
        token = bearer(keys.google.sign(claims()))
        break_endpoint(certs)
        failure = refusal(verifier, token).failure
        assert (failure.status, failure.error) == (503, "certs_unavailable")
        assert certs.hits == 1
        # A failure is cached briefly: once the endpoint is fixed, a request after that succeeds.
        certs.status, certs.body, certs.redirect_to = 200, None, None
        assert refusal(verifier, token).failure.status == 503
        assert certs.hits == 1
        clock.advance(CERTS_FAILURE_TTL_SECONDS)
        assert verifier.verify(token).email == "alice@example.com"

    def test_nothing_listening_is_503(self, dead_url: str, keys: Keys, clock: FakeClock) -> None:
        verifier = IdTokenVerifier(config_for(dead_url), clock=clock)
        failure = refusal(verifier, bearer(keys.google.sign(claims()))).failure
        assert (failure.status, failure.error) == (503, "certs_unavailable")
        assert "certificates" in failure.message

    def test_hanging_endpoint_times_out_as_503(self, certs: CertsEndpoint, keys: Keys, clock: FakeClock) -> None:
        certs.hang = True
        verifier = IdTokenVerifier(
            config_for(certs.url),
            clock=clock,
            fetch_certs=functools.partial(fetch_certs_over_http, timeout=0.2),
        )
        failure = refusal(verifier, bearer(keys.google.sign(claims()))).failure
        assert (failure.status, failure.error) == (503, "certs_unavailable")

    def test_expired_cache_is_not_used_when_refetch_fails(
        self, verifier: IdTokenVerifier, certs: CertsEndpoint, keys: Keys, clock: FakeClock
    ) -> None:
        token = bearer(keys.google.sign(claims(exp=int(NOW) + 7200)))
        verifier.verify(token)
        certs.status = 503
        clock.advance(3601)
        assert refusal(verifier, token).failure.status == 503

    def test_fetch_reports_max_age(self, certs: CertsEndpoint, keys: Keys) -> None:
        certs.cache_control = "public, max-age=19263, must-revalidate, no-transform"
        fetched = fetch_certs_over_http(certs.url)
        assert fetched == FetchedCerts(certs={keys.google.kid: keys.google.cert_pem}, max_age=19263)

    def test_injected_fetcher(self, keys: Keys, clock: FakeClock) -> None:
        seen: list[str] = []

        def fetch(url: str) -> FetchedCerts:
            seen.append(url)
            return FetchedCerts(certs={keys.google.kid: keys.google.cert_pem})

        verifier = IdTokenVerifier(config_for(GOOGLE_CERTS_URL), fetch_certs=fetch, clock=clock)
        assert verifier.verify(bearer(keys.google.sign(claims()))).email == "alice@example.com"
        assert seen == [GOOGLE_CERTS_URL]

    def test_fetcher_exception_is_503(self, keys: Keys, clock: FakeClock) -> None:
        def fetch(url: str) -> FetchedCerts:
            raise ConnectionResetError("peer went away")

        verifier = IdTokenVerifier(config_for(GOOGLE_CERTS_URL), fetch_certs=fetch, clock=clock)
        assert refusal(verifier, bearer(keys.google.sign(claims()))).failure.status == 503


@settings(max_examples=200, deadline=None)
@given(
    header=st.one_of(
        st.text(max_size=300),
        st.from_regex(r"\ABearer [A-Za-z0-9_.=-]{0,300}\Z"),
        st.builds(
            lambda h, p, s: f"Bearer {b64(h)}.{b64(p)}.{b64(s)}",
            st.binary(max_size=60),
            st.binary(max_size=60),
            st.binary(max_size=60),
        ),
    )
)
def test_arbitrary_headers_only_ever_get_401(keys: Keys, header: str) -> None:
    fetched = FetchedCerts(certs={keys.google.kid: keys.google.cert_pem})
    verifier = IdTokenVerifier(config_for(GOOGLE_CERTS_URL), fetch_certs=lambda _: fetched)
    with pytest.raises(AuthError) as caught:
        verifier.verify(header)
    assert caught.value.failure.status == 401


# --------------------------------------------------------------------------- Slack

# Slack's documented worked example ("Verifying requests from Slack").
DOCS_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
DOCS_TIMESTAMP = "1531420618"
DOCS_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmib"
    b"IGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
DOCS_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
DOCS_HEADERS = {"X-Slack-Request-Timestamp": DOCS_TIMESTAMP, "X-Slack-Signature": DOCS_SIGNATURE}

# A block_actions request (wire notes, 05-slack-block-actions-http-request.json); its signature
# was computed with this secret.
BLOCK_ACTIONS_SECRET = "test-signing-secret-0123456789abcdef"
BLOCK_ACTIONS_HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "X-Slack-Request-Timestamp": "1717243600",
    "X-Slack-Signature": "v0=5c78ebc938036b8c15afe12faecbc432c838b76bdd110674d14e8faa32900d5f",
}
BLOCK_ACTIONS_BODY = b"payload=" + urllib.parse.quote(
    json.dumps(
        {
            "type": "block_actions",
            "user": {
                "id": "U0123USER",
                "username": "oncall",
                "name": "oncall",
                "team_id": "T0123TEAM",
            },
            "api_app_id": "A0123456789",
            "token": "verification-token-deprecated",
            "container": {
                "type": "message",
                "message_ts": "1717243503.000200",
                "channel_id": "C0123ABCD",
                "is_ephemeral": False,
            },
            "trigger_id": "1717243600.123456789.0123456789abcdef0123456789abcdef",
            "team": {"id": "T0123TEAM", "domain": "demo-workspace"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": "C0123ABCD", "name": "deploys"},
            "message": {
                "type": "message",
                "subtype": "bot_message",
                "text": "Rolled back checkout",
                "ts": "1717243503.000200",
                "bot_id": "B0123456789",
                "blocks": [
                    {
                        "type": "header",
                        "text": {
                            "type": "plain_text",
                            "text": ":rotating_light: Rolled back checkout",
                        },
                    },
                    {
                        "type": "section",
                        "fields": [
                            {"type": "mrkdwn", "text": "*Service:*\ncheckout"},
                            {"type": "mrkdwn", "text": "*To revision:*\ncheckout-00041-abc"},
                        ],
                    },
                    {
                        "type": "actions",
                        "block_id": "rollback_actions",
                        "elements": [
                            {
                                "type": "button",
                                "action_id": "approve_rollforward",
                                "text": {"type": "plain_text", "text": "Roll forward"},
                                "value": "checkout|checkout-00042-xyz",
                                "style": "primary",
                            }
                        ],
                    },
                ],
            },
            "state": {"values": {}},
            "response_url": "https://hooks.slack.com/actions/T0123TEAM/1717243600123/AbCdEfGhIjKlMnOpQrStUvWx",
            "actions": [
                {
                    "action_id": "approve_rollforward",
                    "block_id": "rollback_actions",
                    "text": {"type": "plain_text", "text": "Roll forward", "emoji": True},
                    "value": "checkout|checkout-00042-xyz",
                    "style": "primary",
                    "type": "button",
                    "action_ts": "1717243600.654321",
                }
            ],
        },
        separators=(",", ":"),
    ),
    safe="/",
).encode("ascii")


def slack_config(secret: str | None = DOCS_SECRET, users: tuple[str, ...] = ("U2CERLKJA", "U0123USER")) -> AuthConfig:
    return AuthConfig(
        slack_signing_secret=SecretStr(secret) if secret is not None else None,
        slack_allowed_users=users,
    )


def slack_refusal(verifier: SlackVerifier, body: bytes, headers: dict[str, str]) -> AuthError:
    with pytest.raises(AuthError) as caught:
        verifier.verify(body, headers)
    return caught.value


def sign_slack(secret: str, timestamp: str, body: bytes) -> str:
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class TestSlack:
    def test_docs_test_vector_validates(self) -> None:
        verifier = SlackVerifier(slack_config(), clock=lambda: float(DOCS_TIMESTAMP))
        verifier.verify(DOCS_BODY, DOCS_HEADERS)
        verifier.check_user("U2CERLKJA")

    def test_our_signing_helper_matches_the_docs(self) -> None:
        # Guards the helper the other cases rely on.
        assert sign_slack(DOCS_SECRET, DOCS_TIMESTAMP, DOCS_BODY) == DOCS_SIGNATURE

    def test_captured_block_actions_request_validates(self) -> None:
        assert len(BLOCK_ACTIONS_BODY) == 2257  # the captured raw body, byte for byte
        verifier = SlackVerifier(slack_config(BLOCK_ACTIONS_SECRET), clock=lambda: 1717243600.0)
        verifier.verify(BLOCK_ACTIONS_BODY, BLOCK_ACTIONS_HEADERS)
        payload = json.loads(urllib.parse.parse_qs(BLOCK_ACTIONS_BODY.decode())["payload"][0])
        verifier.check_user(payload["user"]["id"])

    def test_header_names_are_case_insensitive(self) -> None:
        verifier = SlackVerifier(slack_config(), clock=lambda: float(DOCS_TIMESTAMP))
        verifier.verify(DOCS_BODY, {k.lower(): v for k, v in DOCS_HEADERS.items()})

    @pytest.mark.parametrize(
        ("offset", "ok"),
        [
            pytest.param(300, True, id="300s-old-ok"),
            pytest.param(-300, True, id="300s-ahead-ok"),
            pytest.param(301, False, id="301s-old-stale"),
            pytest.param(-301, False, id="301s-ahead-stale"),
        ],
    )
    def test_replay_window(self, offset: int, ok: bool) -> None:
        verifier = SlackVerifier(slack_config(), clock=lambda: float(DOCS_TIMESTAMP) + offset)
        if ok:
            verifier.verify(DOCS_BODY, DOCS_HEADERS)
        else:
            failure = slack_refusal(verifier, DOCS_BODY, DOCS_HEADERS).failure
            assert (failure.status, failure.error) == (401, "stale_request")

    @pytest.mark.parametrize(
        ("body", "headers", "error"),
        [
            pytest.param(
                DOCS_BODY,
                {**DOCS_HEADERS, "X-Slack-Signature": DOCS_SIGNATURE[:-1] + "0"},
                "invalid_signature",
                id="signature-flipped",
            ),
            pytest.param(
                DOCS_BODY.replace(b"user_id=U2CERLKJA", b"user_id=U0123USER"),
                DOCS_HEADERS,
                "invalid_signature",
                id="body-tampered",
            ),
            pytest.param(DOCS_BODY + b" ", DOCS_HEADERS, "invalid_signature", id="body-trailing-space"),
            pytest.param(
                DOCS_BODY,
                {
                    **DOCS_HEADERS,
                    "X-Slack-Signature": sign_slack("another-secret", DOCS_TIMESTAMP, DOCS_BODY),
                },
                "invalid_signature",
                id="signed-with-other-secret",
            ),
            pytest.param(
                DOCS_BODY,
                {
                    "X-Slack-Request-Timestamp": str(int(DOCS_TIMESTAMP) + 1),
                    "X-Slack-Signature": DOCS_SIGNATURE,
                },
                "invalid_signature",
                id="timestamp-changed",
            ),
            pytest.param(DOCS_BODY, {}, "missing_signature", id="no-headers"),
            pytest.param(
                DOCS_BODY,
                {"X-Slack-Signature": DOCS_SIGNATURE},
                "missing_signature",
                id="no-timestamp",
            ),
            pytest.param(
                DOCS_BODY,
                {"X-Slack-Request-Timestamp": DOCS_TIMESTAMP},
                "missing_signature",
                id="no-signature",
            ),
            pytest.param(
                DOCS_BODY,
                {**DOCS_HEADERS, "X-Slack-Request-Timestamp": "soon"},
                "invalid_signature",
                id="timestamp-not-a-number",
            ),
            pytest.param(
                DOCS_BODY,
                {**DOCS_HEADERS, "X-Slack-Request-Timestamp": f"{DOCS_TIMESTAMP}.5"},
                "invalid_signature",
                id="timestamp-fractional",
            ),
            pytest.param(
                DOCS_BODY,
                {**DOCS_HEADERS, "X-Slack-Signature": "v1=" + DOCS_SIGNATURE[3:]},
                "invalid_signature",
                id="signature-wrong-version",
            ),
            pytest.param(
                DOCS_BODY,
                {**DOCS_HEADERS, "X-Slack-Signature": "v0=" + "é" * 64},
                "invalid_signature",
                id="signature-non-ascii",
            ),
        ],
    )
    def test_refused(
        self,
        caplog: pytest.LogCaptureFixture,
        body: bytes,
        headers: dict[str, str],
        error: str,
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="controller.auth")
        verifier = SlackVerifier(slack_config(), clock=lambda: float(DOCS_TIMESTAMP))
        failure = slack_refusal(verifier, body, headers).failure
        assert (failure.status, failure.error) == (401, error)
        secrets = {DOCS_SECRET, DOCS_SIGNATURE, headers.get("X-Slack-Signature", DOCS_SIGNATURE)}
        for secret_text in secrets:
            assert secret_text not in failure.message
            assert secret_text not in caplog.text

    @pytest.mark.parametrize(
        "config",
        [
            pytest.param(slack_config(secret=None), id="secret-unset"),
            pytest.param(slack_config(users=()), id="users-unset"),
            pytest.param(AuthConfig.from_env({}), id="nothing-set"),
        ],
    )
    def test_unconfigured_is_503(self, config: AuthConfig) -> None:
        verifier = SlackVerifier(config, clock=lambda: float(DOCS_TIMESTAMP))
        failure = slack_refusal(verifier, DOCS_BODY, DOCS_HEADERS).failure
        assert (failure.status, failure.error) == (503, "auth_not_configured")
        assert "SLACK_SIGNING_SECRET" in failure.message
        with pytest.raises(AuthError) as caught:
            verifier.check_user("U2CERLKJA")
        assert caught.value.failure.status == 503

    @pytest.mark.parametrize("user", ["U9999OTHER", "u2cerlkja", "", None])
    def test_user_not_allowed_is_403(self, user: str | None) -> None:
        verifier = SlackVerifier(slack_config(), clock=lambda: float(DOCS_TIMESTAMP))
        with pytest.raises(AuthError) as caught:
            verifier.check_user(user)
        assert (caught.value.failure.status, caught.value.failure.error) == (
            403,
            "forbidden_principal",
        )

    @settings(max_examples=200, deadline=None)
    @given(
        body=st.binary(max_size=200),
        timestamp=st.one_of(st.none(), st.text(max_size=20), st.integers(0, 2**40).map(str)),
        signature=st.one_of(st.none(), st.text(max_size=80), st.from_regex(r"\Av0=[0-9a-f]{64}\Z")),
    )
    def test_arbitrary_input_only_ever_gets_401(
        self, body: bytes, timestamp: str | None, signature: str | None
    ) -> None:
        verifier = SlackVerifier(slack_config(), clock=lambda: float(DOCS_TIMESTAMP))
        headers = {
            name: value
            for name, value in (
                ("X-Slack-Request-Timestamp", timestamp),
                ("X-Slack-Signature", signature),
            )
            if value is not None
        }
        failure = slack_refusal(verifier, body, headers).failure
        assert failure.status == 401
