"""Google's documented name formats (controller/core/names.py), as a table."""

from __future__ import annotations

import pytest

from controller.core import names
from controller.core.errors import MalformedInput

VALID = [
    ("project", "demo-proj"),
    ("project", "example.com:my-project"),
    ("project", "123456789012"),
    ("region", "us-central1"),
    ("region", "northamerica-northeast1"),
    ("region", "europe-west10"),
    ("service", "checkout"),
    ("service", "a"),
    ("service", "a" * 49),
    ("revision", "checkout-00042-xyz"),
    ("revision", "r" * 63),
]
INVALID = [
    ("project", "demo"),  # under 6
    ("project", "Demo-proj"),
    ("project", "demo-proj-"),
    ("project", "demo/proj"),
    ("project", "1demo-proj"),
    ("region", "us-central1/x"),
    ("region", "US-CENTRAL1"),
    ("region", "central"),
    ("service", "checkout/../inventory"),
    ("service", ".."),
    ("service", "a" * 50),
    ("service", "-checkout"),
    ("service", "checkout-"),
    ("service", "check\ud800out"),
    ("service", "Checkout"),
    ("service", "check_out"),
    ("revision", "r" * 64),
    ("revision", "checkout-00042-xyz\n"),
]


@pytest.mark.parametrize(("kind", "value"), VALID)
def test_valid_names(kind: str, value: str) -> None:
    assert names.problem(kind, value) == ""
    names.check(kind, value)


@pytest.mark.parametrize(("kind", "value"), INVALID)
def test_invalid_names_are_malformed_input_with_a_bounded_escaped_value(kind: str, value: str) -> None:
    with pytest.raises(MalformedInput) as caught:
        names.check(kind, value, where="incident '1'")
    text = str(caught.value)
    assert text.startswith(f"incident '1': {kind} ")
    text.encode("ascii")  # the value is shown escaped
    assert len(text) < 300


def test_long_values_are_clipped_in_the_message() -> None:
    assert names.shown("x" * 70_000).endswith("(70000 chars)")
    assert len(names.shown("x" * 70_000)) < 100


def test_unset_is_not_checked() -> None:
    names.check("service", None)
    names.check("service", "")
