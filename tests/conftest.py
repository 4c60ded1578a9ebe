"""Shared fixtures. ``support`` (beside this file) holds builders and in-memory fakes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's real Google or Slack settings, and none leaks its own."""
    for name in list(os.environ):
        if name.startswith(("ROLLBACK_", "SLACK_", "PUBSUB_EMULATOR")) or name in {
            "GOOGLE_CLOUD_PROJECT",
            "GOOGLE_APPLICATION_CREDENTIALS",
        }:
            monkeypatch.delenv(name, raising=False)
    yield
    from controller.adapters import monitoring
    from controller.app import engine

    engine.reset_controller()
    monitoring.reset_credentials()  # resolved once per process: each test starts a fresh search
