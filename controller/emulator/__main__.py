"""Run the Cloud Run and Slack emulators for a person at a terminal: ``python -m controller.emulator``.

Seeds the sample service (``demo-proj/us-central1/checkout``, which the shipped sample alert
names), prints the environment variables that point the controller at the emulators, prints each
traffic change and Slack message as it arrives, and serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from controller.emulator.cloudrun import CloudRunEmulator, PatchRecord, seed_sample
from controller.emulator.monitoring import MonitoringEmulator
from controller.emulator.slack import SlackEmulator

DEFAULT_RUN_PORT = 8181
DEFAULT_SLACK_PORT = 8182
DEFAULT_MONITORING_PORT = 8183


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
        "--pubsub",
        action="store_true",
        help="also run Google's Pub/Sub emulator (if gcloud is installed) with the commands topic pushed to "
        "handle_command on --worker-port and the events topic",
    )
    parser.add_argument("--pubsub-port", type=int, default=8185, help="Pub/Sub emulator port (0 = any free)")
    parser.add_argument("--worker-port", type=int, default=8184, help="where handle_command will listen")
    return parser.parse_args(argv)


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
            from controller.demo import simulate_bad_release

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
            f"  # or: export SLACK_WEBHOOK_URL={slack.webhook_url}\n"
            + "".join(f"  export {k}={v}\n" for k, v in pubsub_env.items())
            + (
                f"  # worker: functions-framework --source main.py --target handle_command --port {args.worker_port}\n"
                if pubsub_env
                else ""
            )
            + "\n"
            "Serving until Ctrl-C.",
            flush=True,
        )
        stop.wait()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
