"""A `prepare` stopped from outside: Ctrl-C ends it with one line and no worker traceback, and a parent
killed outright (SIGKILL, SIGTERM) takes its decoding workers with it. Real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kwsbench.data.cache import ClipCache, prepare
from kwsbench.specs import DatasetSpec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process state from /proc"),
]

# The clips are FSDD's (8 kHz): each worker imports torch to resample its first clip, so a build lasts
# seconds after its workers start, whatever the speed of the machine.
_DRIVER = """
import sys
from kwsbench.data.cache import prepare
from kwsbench.specs import DatasetSpec
try:
    prepare(DatasetSpec.create("folder", sys.argv[1]), cache_dir=sys.argv[2], workers=2, progress=False)
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)
print("built")
"""
_WAIT = 60.0  # seconds any state change may take on a loaded 2-core machine


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4 (ppid), after the "(comm)" field
            out.append(int(entry.name))
    return out


def _status(pid: int) -> dict[str, str] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _alive(pid: int) -> bool:
    status = _status(pid)
    return status is not None and not status["State"].startswith(("Z", "X"))  # a zombie has ended


def _workers(pid: int) -> list[int]:
    """The decoding workers of ``pid`` (spawned interpreters; the resource tracker is not one)."""
    workers = []
    for child in _children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            workers.append(child)
    return workers


def _sigint_state(pid: int) -> str:
    """ "ignored" once the worker's initializer ran; "caught" while Python's own handler (which raises
    KeyboardInterrupt) is installed but the initializer has not run (the worker is importing); else ""."""
    status = _status(pid)
    bit = 1 << (signal.SIGINT - 1)
    if status is None:
        return ""
    if int(status["SigIgn"], 16) & bit:
        return "ignored"
    return "caught" if int(status["SigCgt"], 16) & bit else ""


def _start(root: Path, cache: Path, *, moment: str) -> tuple[subprocess.Popen, list[int]]:
    """Start the driver in its own process group; return once its two workers are at ``moment``:
    "starting" (one imports with Python's KeyboardInterrupt handler in place) or "decoding" (both ran
    their initializer)."""
    run = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, str(root), str(cache)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
        # A shell runs background jobs with SIGINT ignored, and Python then never raises KeyboardInterrupt:
        # give the child the default disposition, as a terminal's foreground job has.
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + _WAIT
    while True:
        workers = _workers(run.pid)
        states = [_sigint_state(w) for w in workers]
        if len(workers) == 2 and (
            ("caught" in states) if moment == "starting" else states == ["ignored", "ignored"]
        ):
            return run, workers
        if run.poll() is not None or time.monotonic() > deadline:
            run.kill()
            out, err = run.communicate()
            pytest.fail(f"workers never started (rc {run.returncode}): {out} {err}")
        time.sleep(0.02)


def _wait_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.fixture
def digits(shared_data: Path, tmp_path: Path) -> Path:
    """A folder dataset of 200 FSDD clips (20 per digit, links to the real files): 4 chunks of 64."""
    root = tmp_path / "digits"
    recordings = sorted((shared_data / "fsdd" / "recordings").glob("*.wav"))
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True)
        for path in [p for p in recordings if p.name.startswith(f"{digit}_")][:20]:
            (root / str(digit) / path.name).symlink_to(path)
    return root


@pytest.mark.parametrize("moment", ["starting", "decoding"])
def test_ctrl_c_prints_one_line_and_cleans_up(digits: Path, tmp_path: Path, moment: str) -> None:
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it: while a worker imports (where
    Python would raise KeyboardInterrupt, but SIGINT is still blocked) or while they decode (ignored)."""
    cache = tmp_path / "cache"
    run, workers = _start(digits, cache, moment=moment)
    os.killpg(run.pid, signal.SIGINT)
    try:
        out, err = run.communicate(timeout=_WAIT)
    finally:
        for pid in [run.pid, *workers]:
            if _alive(pid):  # only after a failure: leave nothing running
                os.kill(pid, signal.SIGKILL)
    assert run.returncode == 130 and out == ""
    assert err == "interrupted\n"  # no KeyboardInterrupt traceback from any worker
    assert _wait_gone(workers) == []
    assert [p.name for p in cache.iterdir()] == []  # the temporary build folder is gone


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_parent_takes_its_workers_along(digits: Path, tmp_path: Path, sig: signal.Signals) -> None:
    cache = tmp_path / "cache"
    run, workers = _start(digits, cache, moment="decoding")
    run.send_signal(sig)
    run.wait(timeout=_WAIT)  # not communicate(): surviving workers would hold its pipes open
    assert run.returncode == -sig
    survivors = _wait_gone(workers)
    for pid in survivors:  # the failure is reported below; do not leave them running
        os.kill(pid, signal.SIGKILL)
    assert survivors == [], "a decoding worker outlived its parent"
    # The killed build could not clean up; the next one removes its folder and builds the cache.
    (leftover,) = cache.iterdir()
    assert leftover.name.startswith(f".building-{run.pid}@")
    result = prepare(DatasetSpec.create("folder", digits), cache_dir=cache, workers=1, progress=False)
    assert not result.hit and sum(result.clips.values()) == 200
    assert [p.name for p in cache.iterdir()] == [Path(result.path).name]
    assert sum(ClipCache.open(result.path).counts().values()) == 200


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
