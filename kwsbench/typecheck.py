"""One shallow check of a loose value (YAML, JSON, a keyword override) against a type annotation.

Used wherever user-supplied values meet typed fields: model overrides, experiment files and records. Pure
Python (no torch, no numpy), so the record schema can use it.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any


def fits(value: object, hint: object, *, finite: bool = True) -> bool:
    """Whether ``value`` has the annotated type; containers are checked by their outer type only.

    A bool is never a number (YAML's ``true`` is not ``1``), an int is a float, and a float must be finite
    unless ``finite`` is False. Unknown annotations accept anything.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, arm, finite=finite) for arm in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is Any or hint is object:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number and (not finite or math.isfinite(value))
    base = origin or hint
    if base is tuple:
        return isinstance(value, (list, tuple))  # YAML and JSON have lists only
    return isinstance(value, base) if isinstance(base, type) else True


def type_name(hint: object) -> str:
    """A readable name of an annotation (``float``, ``int | None``)."""
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
