"""The one percent formatter: the same precision on every Slack and CLI path."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.core.formatting import percent


@pytest.mark.parametrize(
    ("ratio", "text"),
    [
        (0.183, "18.3%"),  # an alert's observed value (pinned by the alert-path Slack tests)
        (0.05, "5%"),  # a round threshold reads as written in the policy
        (0.06, "6%"),
        (0.005, "0.5%"),  # a canary's allowed increase keeps its decimal
        (0.0012, "0.12%"),  # a Wilson bound keeps two
        (0.18425, "18.4%"),
        (0.9996, "100%"),
        (0.0, "0%"),
        (0.00001, "0%"),
    ],
)
def test_three_significant_digits_at_most_two_decimals(ratio: float, text: str) -> None:
    assert percent(ratio) == text


def test_every_slack_path_uses_it() -> None:
    core = Path(__file__).resolve().parents[2] / "controller" / "core"
    for name in ("messages.py", "canary_verdict.py", "verify.py"):
        source = (core / name).read_text()
        assert "from controller.core.formatting import percent" in source
        assert "* 100:." not in source  # no private formatter left
