"""Run the Cloud Run and Slack emulators for a person at a terminal: ``python -m controller.emulator``.

Seeds the sample service (``demo-proj/us-central1/checkout``, which the shipped sample alert
names), prints the environment variables that point the controller at the emulators, prints each
traffic change and Slack message as it arrives, and serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import json
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from controller.core.errors import EXIT_USAGE
from controller.emulator.cloudrun import SAMPLE_PROJECT, CloudRunEmulator, PatchRecord, seed_sample
from controller.emulator.monitoring import MonitoringEmulator
from controller.emulator.slack import SlackEmulator
from controller.emulator.tokens import TokenIssuer

DEFAULT_RUN_PORT = 8181
DEFAULT_SLACK_PORT = 8182
DEFAULT_MONITORING_PORT = 8183
DEFAULT_AUTH_PORT = 8184
DEFAULT_HTTP_PORT = 8080  # where the printed commands serve handle_http
LOCAL_PRINCIPAL = "operator@example.com"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m controller.emulator",
        description="Serve local Cloud Run Admin API v2 and Slack Web API emulators.",
    )
    parser.add_argument("--run-port", type=int, default=DEFAULT_RUN_PORT, help="Cloud Run port (0 = any free)")
    parser.add_argument("--slack-port", type=int, default=DEFAULT_SLACK_PORT, help="Slack port (0 = any free)")
    parser.add_argument(
        "--monitoring-port", type=int, default=DEFAULT_MONITORING_PORT, help="Cloud Monitoring gRPC port (0 = any free)"
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="fill Monitoring with ten minutes of traffic in which the sample's newest revision answers 18%% 5xx",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--operation-polls",
        type=int,
        default=0,
        help="answer each traffic change as done only after this many polls (default 0)",
    )
    parser.add_argument(
        "--auth",
        action="store_true",
        help="also serve token-signing certificates and print a curl line with an ID token, to try handle_http",
    )
    parser.add_argument("--auth-port", type=int, default=DEFAULT_AUTH_PORT, help="certificates port (0 = any free)")
    parser.add_argument("--principal", default=LOCAL_PRINCIPAL, help=f"the tokens' email (default {LOCAL_PRINCIPAL})")
    parser.add_argument(
        "--http-port",
        type=int,
        default=DEFAULT_HTTP_PORT,
        help=f"the port the printed commands serve handle_http on (default {DEFAULT_HTTP_PORT})",
    )
    parser.add_argument(
        "--pubsub",
        action="store_true",
        help="also run Google's Pub/Sub emulator (if gcloud is installed) with the commands topic pushed to "
        "handle_command on --worker-port and the events topic",
    )
    parser.add_argument("--pubsub-port", type=int, default=8185, help="Pub/Sub emulator port (0 = any free)")
    parser.add_argument("--worker-port", type=int, default=8184, help="where handle_command will listen")
    return parser.parse_args(argv)


def _port_in_use(host: str, port: int) -> bool:
    """Checked before binding: gRPC may share a port (SO_REUSEPORT) instead of failing on it."""
    if port == 0:
        return False
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _busy_ports(args: argparse.Namespace) -> list[str]:
    flags = [
        ("--run-port", args.run_port),
        ("--slack-port", args.slack_port),
        ("--monitoring-port", args.monitoring_port),
    ]
    if args.auth:
        flags.append(("--auth-port", args.auth_port))
    return [f"{flag} {port}" for flag, port in flags if _port_in_use(args.host, port)]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _print_patch(rec: PatchRecord) -> None:
    targets = ", ".join(
        f"{t['revision'] or 'LATEST'}={t['percent']}%" + (f" (tag {t['tag']})" if t["tag"] else "") for t in rec.traffic
    )
    print(f"[cloud run] PATCH {rec.service}: {rec.outcome} {rec.message} [{targets}]", flush=True)


def _print_message(msg: dict[str, Any]) -> None:
    where = msg["channel"] or msg["via"]
    print(f"[slack] {msg['method']} {where}: {msg['text']}", flush=True)


def _start_pubsub(args: argparse.Namespace, extras: contextlib.ExitStack) -> dict[str, str]:
    """With --pubsub and gcloud installed: Google's Pub/Sub emulator and the stack's topics (optional)."""
    if not args.pubsub:
        return {}
    import os
    import tempfile
    from pathlib import Path

    from controller.emulator import pubsub

    if not pubsub.available():
        print("note: gcloud is not installed; running without Pub/Sub (commands and events stay off)", flush=True)
        return {}
    log = Path(tempfile.gettempdir()) / "rollback-pubsub-emulator.log"
    host = extras.enter_context(pubsub.pubsub_emulator(log, "demo-proj", args.pubsub_port))
    os.environ["PUBSUB_EMULATOR_HOST"] = host  # the client library reads it
    env = pubsub.local_stack(host, "demo-proj", args.worker_port)
    print(
        f"Pub/Sub emulator (Google's): {host}  topics {env['ROLLBACK_COMMANDS_TOPIC']}, {env['ROLLBACK_EVENTS_TOPIC']}",
        flush=True,
    )
    return env


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    busy = _busy_ports(args)
    if busy:
        print(
            f"python -m controller.emulator: error: port already in use ({', '.join(busy)}): "
            "stop what listens there, or pass another port (0 = any free one)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not _is_loopback(args.host):
        # The emulators have no authentication at all; say so loudly.
        print(
            f"warning: binding {args.host}, which is not loopback; anyone who can reach it can "
            "change the emulated services",
            file=sys.stderr,
        )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    run = CloudRunEmulator(args.host, args.run_port, operation_polls=args.operation_polls)
    slack = SlackEmulator(args.host, args.slack_port)
    monitoring = MonitoringEmulator(args.host, args.monitoring_port)
    run.after_patch = _print_patch
    slack.on_message = _print_message
    with run, slack, monitoring, contextlib.ExitStack() as extras:
        pubsub_env = _start_pubsub(args, extras)
        name = seed_sample(run)
        if args.simulate:
            from controller.emulator.traffic import simulate_bad_release

            simulate_bad_release(run, monitoring)
        print(
            f"Cloud Run Admin API v2 emulator: {run.url}  (seeded {name})\n"
            f"Cloud Monitoring emulator (gRPC): {monitoring.target}"
            + ("  (10 simulated minutes of traffic)" if args.simulate else "")
            + "\n"
            f"Slack emulator: API {slack.api_url}  webhook {slack.webhook_url}\n"
            "\n"
            "Point the controller at them:\n"
            f"  export ROLLBACK_RUN_ENDPOINT={run.url}\n"
            f"  export ROLLBACK_MONITORING_ENDPOINT={monitoring.target}\n"
            f"  export ROLLBACK_SLACK_API_URL={slack.api_url}\n"
            "  export SLACK_BOT_TOKEN=xoxb-local-emulator SLACK_CHANNEL=C0DEPLOYS\n"
            f"  export GOOGLE_CLOUD_PROJECT={SAMPLE_PROJECT}\n"
            f"  # or: export SLACK_WEBHOOK_URL={slack.webhook_url}\n"
            + "".join(f"  export {k}={v}\n" for k, v in pubsub_env.items())
            + (
                f"  # worker: functions-framework --source main.py --target handle_command --port {args.worker_port}\n"
                if pubsub_env
                else ""
            ),
            flush=True,
        )
        issuer = TokenIssuer(f"http://127.0.0.1:{args.http_port}", args.principal, args.host, args.auth_port)
        with issuer if args.auth else contextlib.nullcontext():
            if args.auth:
                print(_http_api_help(issuer, args.http_port), flush=True)
            print("Serving until Ctrl-C.", flush=True)
            stop.wait()
    print("stopped", flush=True)
    return 0


def _http_api_help(issuer: TokenIssuer, http_port: int) -> str:
    """The exports, the command serving handle_http and ready curl lines (docs/manual-control.md)."""
    base = f"http://127.0.0.1:{http_port}"
    token_url = f"{issuer.url}/token"
    body = json.dumps({"region": "us-central1", "service": "checkout", "reason": "trying the API"})
    return (
        f"Token-signing certificates (local, not Google's): {issuer.certs_url}\n"
        "\n"
        "Try the HTTP API (handle_http) with no cloud account: in another terminal, paste the exports above, then\n"
        f"  export ROLLBACK_AUTH_CERTS_URL={issuer.certs_url}\n"
        f"  export ROLLBACK_AUTH_AUDIENCE={issuer.audience}\n"
        f"  export ROLLBACK_ALLOWED_PRINCIPALS={issuer.principal}\n"
        f"  functions-framework --target handle_http --source main.py --host 127.0.0.1 --port {http_port} &\n"
        f"  TOKEN=$(curl -sS {token_url})   # an ID token for {issuer.principal}, valid 1 hour\n"
        f'  curl -sS -H "Authorization: Bearer $TOKEN" '
        f"'{base}/status?project={SAMPLE_PROJECT}&region=us-central1&service=checkout'\n"
        f"  curl -sS -X POST -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
        f"-d {shlex.quote(body)} {base}/rollback\n"
        f'  curl -sS -X POST -H "Authorization: Bearer $TOKEN" '
        f"'{base}/canary/gate?project={SAMPLE_PROJECT}&region=us-central1&service=checkout'\n"
        "\n"
        "Or with a token pasted in (valid 1 hour):\n"
        f"  curl -sS -H 'Authorization: Bearer {issuer.token()}' "
        f"'{base}/status?project={SAMPLE_PROJECT}&region=us-central1&service=checkout'\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
