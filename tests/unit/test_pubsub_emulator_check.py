"""The missing-emulator failure names the missing piece in one line (issue 10 point 16)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from pubsub_emulator import missing_piece


def _exe(path: Path, body: str = "exit 0") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_no_gcloud(tmp_path: Path) -> None:
    problem = missing_piece({"PATH": str(tmp_path)})
    assert problem is not None and "\n" not in problem
    assert problem.startswith("Pub/Sub emulator: gcloud is not on PATH; install google-cloud-cli")
    assert "-m 'not pubsub'" in problem


def test_no_emulator_component(tmp_path: Path) -> None:
    _exe(tmp_path / "sdk" / "bin" / "gcloud")
    problem = missing_piece({"PATH": str(tmp_path / "sdk" / "bin")})
    assert problem is not None and "\n" not in problem
    assert "the pubsub-emulator component is not installed" in problem
    assert "google-cloud-cli-pubsub-emulator" in problem


def test_no_java_and_old_java(tmp_path: Path) -> None:
    sdk = tmp_path / "sdk"
    _exe(sdk / "bin" / "gcloud")
    (sdk / "platform" / "pubsub-emulator").mkdir(parents=True)
    problem = missing_piece({"PATH": str(sdk / "bin")})
    assert problem is not None and problem.startswith("Pub/Sub emulator: java is not on PATH (Java 17 or newer")
    _exe(tmp_path / "java8" / "java", """echo 'openjdk version "1.8.0_392"' >&2""")
    problem = missing_piece({"PATH": f"{sdk / 'bin'}:{tmp_path / 'java8'}"})
    assert problem is not None and "is Java 8; Java 17 or newer is needed" in problem


def test_this_machine_has_everything() -> None:
    """Our machines (and CI) have the emulator: the e2e test runs rather than failing on a check."""
    assert shutil.which("gcloud") is not None
    assert missing_piece() is None


def test_an_emulator_that_exits_early_is_reported_with_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.emulator.pubsub import pubsub_emulator

    fake = tmp_path / "bin" / "gcloud"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Exception: java.lang.UnsupportedClassVersionError'\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    with pytest.raises(RuntimeError) as raised, pubsub_emulator(tmp_path / "pubsub.log", "demo-proj"):
        pass
    assert "exited with 3 before listening" in str(raised.value)
    assert "UnsupportedClassVersionError" in str(raised.value)
