"""The label file of a real recording: one ``start_s end_s keyword`` line per spoken word.

Fields are separated by spaces or tabs (an Audacity label track exported as text reads as it is); blank
lines and lines starting with ``#`` are skipped. Every other line must hold two finite times in seconds,
``0 <= start_s <= end_s``, and one word. ``write_labels`` writes the same format.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

from kwsbench.data.records import printable
from kwsbench.errors import DataError
from kwsbench.stream.matching import Occurrence

FORMAT = "start_s end_s keyword"


def parse_labels(text: str, where: str) -> list[Occurrence]:
    """Occurrences from label-file ``text``; ``where`` (the file name) starts every error message."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split()
        if len(fields) != 3:
            raise DataError(f"{where}:{number}: expected '{FORMAT}', got {stripped!r}; fix that line")
        try:
            start, end = float(fields[0]), float(fields[1])
        except ValueError:
            raise DataError(
                f"{where}:{number}: {fields[0]!r} {fields[1]!r} are not times in seconds; write e.g. '12.30 12.95 yes'"
            ) from None
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start <= end):
            raise DataError(f"{where}:{number}: times must satisfy 0 <= start_s <= end_s, got {start} {end}")
        out.append(Occurrence(start, end, fields[2]))
    return out


def read_labels(path: str | os.PathLike) -> list[Occurrence]:
    """The occurrences of the label file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"{printable(path)}: no such label file; write one '{FORMAT}' line per word"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(
            f"{printable(path)}: cannot read the label file ({err}); it must be UTF-8 text"
        ) from None
    return parse_labels(text, printable(path))


def format_labels(truth: Iterable[Occurrence]) -> str:
    """Label-file text for ``truth``: one ``start_s end_s keyword`` line each, milliseconds kept."""
    return "".join(f"{o.start_s:.3f} {o.end_s:.3f} {o.keyword}\n" for o in truth)
