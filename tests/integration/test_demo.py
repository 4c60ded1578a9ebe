"""The README's run command, as a person runs it: ``python -m controller demo --once``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_demo_rolls_back_the_sample_service() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROLLBACK_", "SLACK_"))}
    result = subprocess.run(
        [sys.executable, "-m", "controller", "demo", "--once"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "Traffic before: LATEST 100%" in lines
    assert "Traffic after:  checkout-00041-abc 100%" in lines
    assert any(line.startswith("Slack → #deploys: :rewind: Rolled back checkout") for line in lines)
