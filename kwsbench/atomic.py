"""One way to write a file a user keeps: a temporary file beside it, flushed to disk, then renamed over it.

A crash or Ctrl-C at any point leaves either the old file or the new one, never half of one, and no
temporary file behind (the rename is atomic within a folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which must not race with other threads.
_UMASK = _read_umask()


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(binary file)`` on a temporary file beside ``path``, fsync it, rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); a result file gets the permissions any new file would.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """``text`` as UTF-8 at ``path``, atomically."""
    return write_atomically(path, lambda f: f.write(text.encode("utf-8")))


def write_json_atomically(path: str | os.PathLike, values: Any, *, allow_nan: bool = False) -> Path:
    """``values`` as indented JSON at ``path``, atomically."""
    return write_text_atomically(
        path, json.dumps(values, indent=2, ensure_ascii=False, allow_nan=allow_nan) + "\n"
    )
