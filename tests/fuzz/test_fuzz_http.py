"""Fuzzing the HTTP API (``handle_http``): every route, any method, body and query (hypothesis).

The routes are served by Flask exactly as functions-framework serves them (``api.handle`` on the
Flask request), wired by ``api.build_api`` to the Cloud Run emulator, a local certificates server
and a Slack signing secret. Callers are authenticated (a valid ID token, a valid Slack signature),
so what is fuzzed is everything after authentication. Properties:

* no 5xx: with every dependency up, no request, however malformed, is the server's fault;
* no action from an invalid request: an answer other than 200 leaves Cloud Run unwritten;
* the answer is always a JSON object.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import flask
import fuzz_profile  # noqa: F401  (loads the bounded CI profile)
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from tokens import google_claims, make_key, serve_certs

from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec
from controller.emulator.monitoring import MonitoringEmulator
from controller.surfaces import api

AUDIENCE = "https://europe-west1-demo-proj.cloudfunctions.net/rollback-http"
ALICE = "alice@example.com"
SECRET = "fuzz-signing-secret-0123456789abcdef"
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
DEEP = b'{"a":' * 5000 + b"1" + b"}" * 5000

HOSTILE = st.sampled_from(
    ["", "..", "checkout/../x", "\ud800", "<!channel>", "a" * 3000, "checkout", "us-central1", "demo-proj", "0"]
)
TEXT = st.one_of(HOSTILE, st.text(max_size=30))
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=5)),
    max_leaves=10,
)
FIELDS = st.sampled_from(
    ["project", "region", "service", "reason", "to_revision", "dry_run", "force", "revision", "candidate", "x"]
)
PATHS = st.one_of(st.sampled_from(sorted(api.ROUTES)), st.sampled_from(["/x", "/hold/", "//status", "/canary"]))


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["object", "object", "json", "bytes", "deep", "empty"]))
    if kind == "object":
        doc = draw(st.dictionaries(FIELDS, st.one_of(TEXT, JSON), max_size=6))
        return json.dumps(doc).encode("utf-8", "surrogatepass")
    if kind == "json":
        return json.dumps(draw(JSON)).encode("utf-8", "surrogatepass")
    if kind == "deep":
        return DEEP
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    return b""


@pytest.fixture(scope="module")
def client() -> Iterator[tuple[Any, CloudRunEmulator, str]]:
    key = make_key("fuzz-key")
    with CloudRunEmulator() as run, MonitoringEmulator() as monitoring, serve_certs(key) as certs:
        run.add_service(
            "demo-proj",
            "us-central1",
            "checkout",
            revisions=[
                RevisionSpec(name="checkout-00041-abc", create_time=T0 - timedelta(days=1)),
                RevisionSpec(name="checkout-00042-xyz", create_time=T0 - timedelta(minutes=10)),
            ],
        )
        env = {
            "ROLLBACK_RUN_ENDPOINT": run.url,
            "ROLLBACK_MONITORING_ENDPOINT": monitoring.target,
            "ROLLBACK_AUTH_AUDIENCE": AUDIENCE,
            "ROLLBACK_ALLOWED_PRINCIPALS": ALICE,
            "ROLLBACK_AUTH_CERTS_URL": certs,
            "SLACK_SIGNING_SECRET": SECRET,
            "ROLLBACK_SLACK_ALLOWED_USERS": "U0123USER",
            "GOOGLE_CLOUD_PROJECT": "demo-proj",
        }
        built = api.build_api(env)
        app = flask.Flask("fuzz")
        app.url_map.strict_slashes = False  # as functions-framework's catch-all route

        @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "DELETE", "PUT", "PATCH"])
        @app.route("/<path:path>", methods=["GET", "POST", "DELETE", "PUT", "PATCH"])
        def serve(path: str) -> Any:
            return api.handle(flask.request)

        original = api._api
        api._api = built  # what get_api() returns: the routes use this process-wide instance
        try:
            yield app.test_client(), run, key.sign(google_claims(AUDIENCE, ALICE))
        finally:
            api._api = original


def _applied(run: CloudRunEmulator) -> int:
    return sum(1 for p in run.patches if p.outcome == "applied")


@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
    path=PATHS,
    body=bodies(),
    query=st.dictionaries(FIELDS, TEXT.filter(lambda t: "\ud800" not in t), max_size=4),
)
@example(method="POST", path="/rollback", body=DEEP, query={})
@example(method="DELETE", path="/hold", body=DEEP, query={})
@example(method="POST", path="/slack/actions", body=DEEP, query={})
@example(method="POST", path="/hold", body=b'{"region": "us-central1", "service": "checkout/../x"}', query={})
def test_api_never_answers_5xx_and_invalid_requests_change_nothing(
    client: tuple[Any, CloudRunEmulator, str], method: str, path: str, body: bytes, query: dict[str, str]
) -> None:
    http, run, token = client
    before = _applied(run)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if path == "/slack/actions":
        ts = str(int(time.time()))
        form = b"payload=" + urllib.parse.quote_from_bytes(body).encode()
        sig = "v0=" + hmac.new(SECRET.encode(), f"v0:{ts}:".encode() + form, hashlib.sha256).hexdigest()
        headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig}
        body = form
    response = http.open(path, method=method, data=body, query_string=query, headers=headers)
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    assert isinstance(response.get_json(silent=True), dict)
    if response.status_code != 200:
        assert _applied(run) == before
