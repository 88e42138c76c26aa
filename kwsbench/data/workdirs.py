"""Folders kwsbench writes into: prove one is writable before work starts, and name temporary work
folders after their owner so that a later run removes those whose process was killed.

A build or download works in a temporary folder beside its target and renames it into place when complete
(atomic). A process killed outright (SIGKILL, power loss) cannot clean up, so each temporary folder is named
``<prefix><pid>@<host>.<random>``: a later run on the same host removes it as soon as that process is gone,
and any run removes one older than a day (a folder from another host, or a recycled pid).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

from kwsbench.data.records import printable
from kwsbench.errors import DataError

log = logging.getLogger(__name__)

STALE_SECONDS = 86_400  # a work folder older than this is abandoned whoever owns it


def host_tag() -> str:
    """This host as it appears in work-folder names: dots end the owner part, so only letters, digits,
    ``_`` and ``-`` are kept."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _ancestor_file(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (or ``path`` itself) when it is not a folder."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def writable_folder(path: str | os.PathLike, what: str, fix: str) -> Path:
    """``path`` created if missing (with its parents), after a real probe write proves it takes files.

    ``what`` names the input in the message (``"--cache-dir /x"``); ``fix`` ends it. Any failure (a file
    in the way, no permission, a read-only file system) is one DataError: the probe write, not
    ``os.access``, decides, because root passes every permission check a read-only mount still refuses.
    """
    path = Path(path).expanduser()
    blocker = _ancestor_file(path)
    if blocker is not None:
        where = "is a file" if blocker == path else f"lies under {printable(blocker)}, which is a file"
        raise DataError(f"{what}: {where}, not a folder; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".kwsbench-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise DataError(f"{what}: cannot write there ({err.strerror or err}); {fix}") from None
    return path


def make_work_folder(parent: Path, prefix: str, label: str = "") -> Path:
    """A new temporary folder ``<prefix><pid>@<host>.<label>-<random>`` in ``parent`` (see the module doc)."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}@{host_tag()}.{label}-", dir=parent))


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user holds that pid
        return True
    return True


def remove_stale_work_folders(parent: Path, prefix: str) -> list[Path]:
    """Remove the work folders ``prefix*`` in ``parent`` whose owner is gone or that are older than a day;
    returns what was removed. Folders of live processes (a concurrent build) are left alone."""
    owner = re.compile(re.escape(prefix) + r"(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]+)\.")
    removed: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        try:
            age = time.time() - entry.lstat().st_mtime
        except OSError:
            continue
        match = owner.match(entry.name)
        gone = (
            match is not None
            and match["host"] == host_tag()
            and int(match["pid"]) != os.getpid()
            and not _owner_alive(int(match["pid"]))
        )
        if gone or age > STALE_SECONDS:
            log.info("removing %s, left by an interrupted run", printable(entry))
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
