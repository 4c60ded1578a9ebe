"""verify.alert_age, suspect_window_end and no_longer_confirmed: when the alert path measures (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.verify import (
    Verdict,
    Verification,
    alert_age,
    no_longer_confirmed,
    suspect_window_end,
)

NOW = datetime(2026, 12, 1, 17, 2, tzinfo=UTC)
LAG = timedelta(minutes=3)


@pytest.mark.parametrize(
    ("started_ago", "stale", "ends_ago"),
    [
        pytest.param(timedelta(seconds=90), False, timedelta(seconds=90), id="fresh: the incident's start"),
        pytest.param(timedelta(minutes=4), False, LAG, id="older than the lag: now - lag"),
        pytest.param(timedelta(hours=3), True, LAG, id="old delivery: the present"),
        pytest.param(timedelta(seconds=90), True, LAG, id="old by publish time: the present"),
        pytest.param(-timedelta(minutes=5), False, timedelta(0), id="start in the future: never after now"),
    ],
)
def test_suspect_window_end(started_ago: timedelta, stale: bool, ends_ago: timedelta) -> None:
    assert suspect_window_end(NOW, NOW - started_ago, LAG, stale=stale) == NOW - ends_ago


@given(
    started=st.datetimes(timezones=st.just(UTC)),
    lag=st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=1)),
    stale=st.booleans(),
)
def test_the_window_never_ends_in_the_future_nor_before_the_ingested_present(
    started: datetime, lag: timedelta, stale: bool
) -> None:
    end = suspect_window_end(NOW, started, lag, stale=stale)
    assert NOW - lag <= end <= NOW


def test_alert_age_counts_from_the_earlier_of_start_and_publish() -> None:
    started = NOW - timedelta(minutes=4)
    assert alert_age(NOW, started) == timedelta(minutes=4)
    assert alert_age(NOW, started, NOW - timedelta(hours=2)) == timedelta(hours=2)
    assert alert_age(NOW, started, NOW - timedelta(minutes=1)) == timedelta(minutes=4)


@pytest.mark.parametrize(
    ("age", "text"),
    [
        (timedelta(minutes=45), "alert from 16:17 UTC is 45 min old and no longer confirmed"),
        (timedelta(hours=3), "alert from 14:02 UTC is 3 h old and no longer confirmed"),
        (timedelta(days=3), "alert from 2026-11-28 17:02 UTC is 3 d old and no longer confirmed"),
    ],
)
def test_no_longer_confirmed_says_when_and_how_old(age: timedelta, text: str) -> None:
    found = no_longer_confirmed(Verification(verdict=Verdict.INCONCLUSIVE, note="too little traffic"), NOW - age, age)
    assert found.verdict is Verdict.NOT_CONFIRMED
    assert found.note == f"{text} (too little traffic)"
