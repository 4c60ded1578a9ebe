"""An in-process emulator of the Slack Web API and incoming webhooks, for the real ``slack_sdk``.

Modelled on slack_sdk's own mock server (a real HTTP server the client reaches through
``base_url``; see ``wire/05-slack.md``). Point ``WebClient(token="xoxb-…", base_url=emu.api_url)``
or ``WebhookClient(emu.webhook_url)`` at it.

Implemented:

* ``POST /api/chat.postMessage`` and ``/api/chat.update`` (JSON or form body) → ``{"ok": true,
  "channel", "ts", "message"}``; ``ts`` values are unique and increasing. ``chat.update`` of an
  unknown ``ts`` → ``message_not_found``.
* ``POST /api/auth.test`` → ``ok``. Any other method → ``unknown_method``.
* ``POST /services/{T}/{B}/{X}`` (incoming webhook) → HTTP 200, plain-text ``ok``; a payload with
  neither ``text`` nor ``blocks`` → 400 ``no_text``.
* ``POST /actions/…`` (an interaction ``response_url``) → 200 ``ok``, recorded with
  ``via="response_url"``.

Errors behave like Slack: a bad or missing token (anything not starting with ``xoxb-``) →
HTTP 200 ``{"ok": false, "error": "invalid_auth"}``; no channel → ``channel_not_found``. Tests
inject failures with :meth:`SlackEmulator.rate_limit_next` (HTTP 429 + ``Retry-After``),
:meth:`SlackEmulator.fail_next` (HTTP 5xx) and :meth:`SlackEmulator.api_error_next`
(HTTP 200 ``ok:false``). Faults modelled on Slack's documented behaviour:
:meth:`SlackEmulator.rate_limit_for` refuses *every* call for a time window with 429 and the
``Retry-After`` still left (Slack's rate limits are windows: a retry before ``Retry-After`` is
refused again; https://docs.slack.dev/apis/web-api/rate-limits), and :meth:`SlackEmulator.set_down`
drops connections without an answer (Slack unreachable).

The token is a secret: it is never stored or printed — records keep only whether one was sent and
its ``xox?-`` prefix.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from controller.emulator import BackgroundHTTPServer, JsonHandler

__all__ = ["SlackEmulator"]

WEBHOOK_PATH = "/services/T000/B000/XXXX"
BOT_ID = "B0EMULATOR"
APP_ID = "A0EMULATOR"
_MAX_RECORDS = 10_000  # bound on the recorders, so a long-running emulator stays small

Via = Literal["api", "webhook", "response_url"]


@dataclass
class _Injection:
    """A failure to answer the next ``remaining`` calls with."""

    remaining: int
    status: int
    error: str
    headers: dict[str, str]


def _token_prefix(token: str) -> str:
    """``xoxb-`` for ``xoxb-…``: enough to tell token kinds apart without keeping the secret."""
    head, sep, _ = token.partition("-")
    return f"{head}-" if sep and len(head) <= 5 else ""


class SlackEmulator(BackgroundHTTPServer):
    """Slack Web API + incoming webhooks over plain HTTP on loopback, with a recorder.

    ``messages`` holds one dict per delivered message: ``method`` (``chat.postMessage``,
    ``chat.update``, ``webhook``, ``response_url``), ``channel``, ``text``, ``blocks``, ``ts``,
    ``thread_ts``, ``via``. ``requests`` holds every HTTP request (parsed body, status answered,
    token prefix — never the token).
    """

    thread_name = "slack-emulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        #: Called with each recorded message (the CLI prints them). Runs on a server thread.
        self.on_message: Callable[[dict[str, Any]], None] | None = None
        self._cond = threading.Condition()
        self._messages: deque[dict[str, Any]] = deque(maxlen=_MAX_RECORDS)
        self._requests: deque[dict[str, Any]] = deque(maxlen=_MAX_RECORDS)
        self._injections: deque[_Injection] = deque()
        self._last_ts_us = 0
        self._limited_until = 0.0  # monotonic time before which every call is rate limited
        self.down = False  # set_down(True): connections are closed without an answer

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """``base_url`` for ``slack_sdk.WebClient`` (with the trailing slash it expects)."""
        return f"{self.base_url}/api/"

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}{WEBHOOK_PATH}"

    # -- failure injection -----------------------------------------------------------------

    def rate_limit_next(self, n: int, retry_after: int = 0) -> None:
        """Answer the next ``n`` calls with HTTP 429, ``Retry-After``, ``{"ok":false,"error":"ratelimited"}``."""
        self._inject(n, 429, "ratelimited", {"Retry-After": str(retry_after)})

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` calls with HTTP ``status`` (a Slack outage)."""
        self._inject(n, status, "fatal_error", {})

    def api_error_next(self, n: int, error: str) -> None:
        """Answer the next ``n`` API calls with HTTP 200 ``{"ok": false, "error": error}``."""
        self._inject(n, 200, error, {})

    def rate_limit_for(self, seconds: float) -> None:
        """Every call in the next ``seconds`` gets HTTP 429 with the whole seconds left as ``Retry-After``."""
        with self._cond:
            self._limited_until = time.monotonic() + seconds

    def set_down(self, down: bool = True) -> None:
        """Slack unreachable: accept connections and close them without answering."""
        self.down = down

    def _rate_limited(self) -> int | None:
        with self._cond:
            left = self._limited_until - time.monotonic()
        return None if left <= 0 else math.ceil(left)

    def _inject(self, n: int, status: int, error: str, headers: dict[str, str]) -> None:
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._cond:
            self._injections.append(_Injection(n, status, error, headers))

    def _take_injection(self) -> _Injection | None:
        with self._cond:
            while self._injections and self._injections[0].remaining <= 0:
                self._injections.popleft()
            if not self._injections:
                return None
            inj = self._injections[0]
            inj.remaining -= 1
            return inj

    # -- recorder --------------------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Delivered messages, oldest first (a snapshot)."""
        with self._cond:
            return [dict(m) for m in self._messages]

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every HTTP request received, oldest first (a snapshot; no token values)."""
        with self._cond:
            return [dict(r) for r in self._requests]

    def reset(self) -> None:
        """Forget messages, requests and pending failure injections."""
        with self._cond:
            self._messages.clear()
            self._requests.clear()
            self._injections.clear()

    def wait_for_messages(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least ``n`` messages were delivered; raise ``TimeoutError`` after ``timeout`` s."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= n, timeout=timeout):
                raise TimeoutError(f"expected {n} Slack message(s) within {timeout}s, got {len(self._messages)}")
            return [dict(m) for m in self._messages]

    # -- request handling --------------------------------------------------------------------

    def _next_ts(self) -> str:
        """A message ``ts`` ("seconds.micros"): unique and strictly increasing, like Slack's."""
        with self._cond:
            now_us = time.time_ns() // 1000
            self._last_ts_us = max(now_us, self._last_ts_us + 1)
            sec, us = divmod(self._last_ts_us, 1_000_000)
            return f"{sec}.{us:06d}"

    def _record(self, message: dict[str, Any]) -> None:
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()
        hook = self.on_message
        if hook is not None:
            hook(dict(message))

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str, dict[str, str]]:
        """Answer one POST: ``(status, body, content type, extra headers)``."""
        route = urlsplit(path).path
        ctype = headers.get("content-type", "")
        params = _parse_body(body, ctype)
        auth = headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else str(params.pop("token", ""))
        entry: dict[str, Any] = {
            "method": "POST",
            "path": route,
            "content_type": ctype,
            "body": params,
            "token_sent": bool(token),
            "token_prefix": _token_prefix(token),
        }
        status, payload, out_type, extra = self._answer(route, token, params)
        entry["status"] = status
        with self._cond:
            self._requests.append(entry)
        return status, payload, out_type, extra

    def _answer(self, route: str, token: str, params: dict[str, Any]) -> tuple[int, bytes, str, dict[str, str]]:
        is_api = route.startswith("/api/")
        if not is_api and not route.startswith(("/services/", "/actions/")):
            return 404, b"not_found", "text/plain; charset=utf-8", {}
        limited = self._rate_limited()
        if limited is not None:
            inj: _Injection | None = _Injection(1, 429, "ratelimited", {"Retry-After": str(limited)})
        else:
            inj = self._take_injection()
        if inj is not None:
            if is_api:
                body = {"ok": False, "error": inj.error}
                return inj.status, _json(body), "application/json; charset=utf-8", inj.headers
            # Webhooks answer in plain text, errors included.
            text = "rate_limited" if inj.status == 429 else inj.error
            return inj.status, text.encode(), "text/plain; charset=utf-8", inj.headers
        if not is_api:
            return self._webhook(route, params)
        status, answer = self._api(route.removeprefix("/api/"), token, params)
        return status, _json(answer), "application/json; charset=utf-8", {}

    def _webhook(self, route: str, params: dict[str, Any]) -> tuple[int, bytes, str, dict[str, str]]:
        if not params.get("text") and not params.get("blocks"):
            return 400, b"no_text", "text/plain; charset=utf-8", {}
        via: Via = "webhook" if route.startswith("/services/") else "response_url"
        message: dict[str, Any] = {
            "method": via,
            "channel": str(params.get("channel", "")),
            "text": str(params.get("text", "")),
            "blocks": _blocks(params.get("blocks")),
            "ts": "",  # a webhook cannot return a ts, so none is recorded
            "thread_ts": str(params.get("thread_ts", "")),
            "via": via,
        }
        if via == "response_url":
            message["replace_original"] = bool(params.get("replace_original", False))
        self._record(message)
        return 200, b"ok", "text/plain; charset=utf-8", {}

    def _api(self, method: str, token: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method not in ("chat.postMessage", "chat.update", "auth.test"):
            return 200, {"ok": False, "error": "unknown_method"}
        if not token.startswith("xoxb-"):
            return 200, {"ok": False, "error": "invalid_auth" if token else "not_authed"}
        if method == "auth.test":
            return 200, {
                "ok": True,
                "url": "https://emulator.slack.test/",
                "team": "Emulator",
                "user": "rollback-bot",
                "team_id": "T000",
                "user_id": "U000",
                "bot_id": BOT_ID,
                "is_enterprise_install": False,
            }
        channel = str(params.get("channel", ""))
        if not channel:
            return 200, {"ok": False, "error": "channel_not_found"}
        text = str(params.get("text", ""))
        blocks = _blocks(params.get("blocks"))
        if not text and not blocks:
            return 200, {"ok": False, "error": "no_text"}
        thread_ts = str(params.get("thread_ts", ""))
        if method == "chat.update":
            ts = str(params.get("ts", ""))
            known = any(m["ts"] == ts and m["channel"] == channel for m in self.messages if m["via"] == "api")
            if not ts or not known:
                return 200, {"ok": False, "error": "message_not_found"}
        else:
            ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "text": text,
            "ts": ts,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
        }
        if blocks:
            message["blocks"] = blocks
        if thread_ts:
            message["thread_ts"] = thread_ts
        self._record(
            {
                "method": method,
                "channel": channel,
                "text": text,
                "blocks": blocks,
                "ts": ts,
                "thread_ts": thread_ts,
                "via": "api",
            }
        )
        answer: dict[str, Any] = {"ok": True, "channel": channel, "ts": ts, "message": message}
        if method == "chat.update":
            answer["text"] = text
        return 200, answer

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                if emulator.down:
                    self.close_connection = True
                    self.connection.close()
                    return
                body = self.read_body()
                if body is None:
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload, ctype, extra = emulator.handle(self.path, headers, body)
                self.reply(status, payload, ctype, extra)

            def do_GET(self) -> None:
                # Slack's API accepts GET for some methods; nothing here needs it.
                self.reply(405, b"method_not_allowed", "text/plain; charset=utf-8")

        return Handler


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def _parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    """Slack accepts JSON or form bodies; a form's ``blocks`` is itself a JSON string."""
    text = body.decode("utf-8", errors="replace")
    if "application/json" in content_type:
        try:
            parsed = json.loads(text) if text else {}
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    form = parse_qs(text, keep_blank_values=True)
    params: dict[str, Any] = {k: v[0] for k, v in form.items()}
    if "payload" in params:  # response_url/webhook form posts wrap JSON in payload=
        try:
            inner = json.loads(params["payload"])
        except ValueError:
            inner = None
        if isinstance(inner, dict):
            params = inner
    return params


def _blocks(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return []
    return [b for b in raw if isinstance(b, dict)] if isinstance(raw, list) else []
