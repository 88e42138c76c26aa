"""The one shallow type check shared by model overrides, experiment files and records."""

from __future__ import annotations

import math
from typing import Any, Literal

import pytest

from kwsbench.typecheck import fits, type_name


@pytest.mark.parametrize(
    ("value", "hint", "expected"),
    [
        (2, float, True), (2.5, float, True), (True, float, False), ("2", float, False), (math.nan, float, False),
        (2, int, True), (2.0, int, False), (False, int, False), (True, bool, True), (1, bool, False),
        (None, int | None, True), ("a", int | None, False), ("avg", Literal["avg", "max"], True),
        ("sum", Literal["avg", "max"], False), ([1, 2], tuple[int, ...], True), ([1], list[int], True),
        ({"a": 1}, dict[str, Any], True), ([1], dict[str, Any], False), (object(), Any, True),
    ],
)  # fmt: skip
def test_fits(value, hint, expected):
    assert fits(value, hint) is expected


def test_non_finite_floats_only_where_allowed():
    assert fits(math.inf, float, finite=False) and not fits(math.inf, float)
    assert type_name(float) == "float" and "int" in type_name(int | None)
