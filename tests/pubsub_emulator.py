"""What Google's Pub/Sub emulator needs, checked before starting it, so a missing piece is one
line naming it (gcloud, the emulator component, Java 17+) instead of a timeout or an assertion
on ``None``. (When it exits early, ``controller.emulator.pubsub`` says so with the end of its output.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

INSTALL = (
    "install google-cloud-cli, google-cloud-cli-pubsub-emulator and openjdk-17-jre-headless (Debian/Ubuntu, "
    "see the README), or run without it: pytest -m 'not pubsub'"
)


def missing_piece(env: Mapping[str, str] | None = None) -> str | None:
    """One line saying what is missing to run ``gcloud beta emulators pubsub start``, or None."""
    path = (env if env is not None else os.environ).get("PATH", "")
    gcloud = shutil.which("gcloud", path=path)
    if gcloud is None:
        return f"Pub/Sub emulator: gcloud is not on PATH; {INSTALL}"
    sdk_root = Path(gcloud).resolve().parent.parent
    if not (sdk_root / "platform" / "pubsub-emulator").is_dir():
        return (
            f"Pub/Sub emulator: the pubsub-emulator component is not installed in {sdk_root} "
            f"(Debian package google-cloud-cli-pubsub-emulator, or gcloud components install pubsub-emulator); {INSTALL}"
        )
    java = shutil.which("java", path=path)
    if java is None:
        return f"Pub/Sub emulator: java is not on PATH (Java 17 or newer is needed); {INSTALL}"
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Pub/Sub emulator: {java} -version failed ({exc}); {INSTALL}"
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    major = int(found[1]) if found else 0
    if major == 1 and found and found[2]:  # "1.8.0_392" is Java 8
        major = int(found[2])
    if major < 17:
        return f"Pub/Sub emulator: {java} is Java {major or '?'}; Java 17 or newer is needed; {INSTALL}"
    return None
