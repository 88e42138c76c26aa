"""Reading and writing records: JSON Lines appended under a file lock, JSON lists written atomically.

A results file is the source of truth of a sweep, so an append is one ``write`` of one whole line under an
exclusive ``flock`` and ``fsync``-ed before the lock is released: two processes never interleave lines,
and a process killed mid-write leaves at most one torn last line, which the next append seals off and
every reader skips with a warning instead of failing on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from kwsbench.atomic import write_json_atomically
from kwsbench.results.schema import Record, RecordError, record_from_dict

log = logging.getLogger(__name__)


def _open_error(path: Path, err: OSError) -> RecordError:
    return RecordError(
        f"{path}: cannot write results ({err.strerror or err}); choose a writable folder with --out"
    )


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[int]:
    """Hold an exclusive lock on ``path`` (created if missing); yields its file descriptor, opened for append."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as err:
        raise _open_error(path, err) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing releases the flock


def _sealed(fd: int) -> bool:
    """Whether the file ends in a newline (or is empty): otherwise its last line was torn by a crash."""
    size = os.fstat(fd).st_size
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"


def append_to(fd: int, records: Iterable[Record]) -> None:
    """Append ``records`` to the locked results file ``fd`` (see ``locked``) and make them durable."""
    text = "".join(json.dumps(r.to_dict(), ensure_ascii=False, allow_nan=False) + "\n" for r in records)
    if not _sealed(fd):
        text = "\n" + text  # the torn line stays a line of its own, skipped by readers
    os.write(fd, text.encode("utf-8"))
    os.fsync(fd)


def append_record(path: str | os.PathLike, record: Record) -> None:
    """Append one record as one JSON line to ``path``, safe against concurrent writers and crashes."""
    with locked(path) as fd:
        append_to(fd, [record])


def parse_lines(text: str, source: str) -> list[Record]:
    """Records from JSON Lines text; a torn line (from a crash mid-write) is skipped with a warning."""
    records = []
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}:{number}: "
        try:
            values = json.loads(line)
        except json.JSONDecodeError:
            # Only a line the writer never finished is expected here: the last one, or one sealed off by
            # a later append (it then has no closing brace). Anything else is damage the user must see.
            if number == len(lines) or not line.rstrip().endswith("}"):
                log.warning("%sskipping an incomplete line (a write interrupted by a crash)", where)
                continue
            raise RecordError(f"{where}not valid JSON; repair or remove that line") from None
        records.append(record_from_dict(values, where))
    return records


def read_records(path: str | os.PathLike, kind: type[Record] | None = None) -> list[Record]:
    """Every record in the JSON Lines file ``path`` (only those of class ``kind`` when given)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordError(
            f"{path}: no such results file; run the experiment first or check the path"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise RecordError(f"{path}: cannot read results ({err})") from None
    records = parse_lines(text, str(path))
    return [r for r in records if kind is None or isinstance(r, kind)]


def write_json(path: str | os.PathLike, records: Iterable[Record]) -> None:
    """Write records as one JSON list, atomically (temporary file, then rename)."""
    path = Path(path)
    try:
        write_json_atomically(path, [r.to_dict() for r in records])
    except OSError as err:
        raise _open_error(path, err) from None


def read_json(path: str | os.PathLike) -> list[Record]:
    """Records from a JSON list (``write_json``, ``kwsbench bench --json``) or a single JSON object."""
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: not a JSON results file ({err})") from None
    items = values if isinstance(values, list) else [values]
    return [record_from_dict(v, f"{path}[{i}]: ") for i, v in enumerate(items)]
