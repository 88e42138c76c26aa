"""Model overrides are type-checked before anything is built: a wrong type or a non-finite value fails at once."""

from __future__ import annotations

import math

import pytest

from kwsbench.errors import ModelError
from kwsbench.models import create_model


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"tau": "2"}, "option tau='2': expected float"),
        ({"tau": math.nan}, "option tau=nan: expected float (finite)"),
        ({"tau": math.inf}, "option tau=inf: expected float (finite)"),
        ({"tau": True}, "option tau=True: expected float"),
        ({"num_subbands": 2.5}, "option num_subbands=2.5: expected int"),
        ({"num_subbands": "5"}, "option num_subbands='5': expected int"),
        ({"use_subspectral_norm": "false"}, "option use_subspectral_norm='false': expected bool"),
        ({"num_classes": "12"}, "num_classes must be a whole number"),
        ({"num_classes": 0}, "num_classes must be a whole number of at least 1"),
        ({"num_classes": 2.0}, "num_classes must be a whole number"),
    ],
)
def test_wrong_types_fail_at_once_with_one_line(overrides, expected):
    # The message is the type check's own, so it failed before the constructor ran (a string width
    # would otherwise build int(8 * '2') = 22,222,222 channels first).
    with pytest.raises(ModelError) as err:
        create_model("bcresnet_1", **overrides)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_right_types_still_build():
    model = create_model("bcresnet_1", tau=2, num_subbands=5, use_subspectral_norm=False)
    assert sum(p.numel() for p in model.parameters()) > 9_232
