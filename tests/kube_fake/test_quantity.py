"""Quantities as kube-apiserver stores them (apimachinery's CanonicalizeBytes); the common cases are also
checked against the real apiserver in tests/contract/test_container_actions.py."""

from __future__ import annotations

from typing import Any

import pytest

from remediator.testing.kube.quantity import canonical


@pytest.mark.parametrize(("written", "stored"), [
    ("1.5Gi", "1536Mi"), ("2048Ki", "2Mi"), ("1Gi", "1Gi"), ("0.5Gi", "512Mi"), ("1023Ki", "1023Ki"),
    ("512", "512"), ("0.5Ki", "512"),  # binary below 1024 is written as a decimal
    ("0.1Gi", "107374182400m"),  # a binary amount with a fraction: decimal, nothing lost
    ("1000m", "1"), ("0.5", "500m"), ("1.5", "1500m"), ("1500", "1500"), ("2000", "2k"), ("100m", "100m"),
    ("1e3", "1e3"), ("0", "0"), ("0Gi", "0"), (2, "2"), (0.25, "250m"), ("0.0000000001", "1n"),
])
def test_canonical_form(written: Any, stored: str) -> None:
    assert canonical(written) == stored


@pytest.mark.parametrize("text", ["abc", "1Gb", "", ".", None, True, ["1"]])
def test_what_is_not_a_quantity_is_left_for_validation(text: Any) -> None:
    assert canonical(text) == text
