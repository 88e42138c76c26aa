"""Decode a dataset's clips once into fixed-length arrays on disk (the "prepare" step) and read them back.

One cache folder per dataset and settings holds ``<split>.npy`` (``(N, clip_samples)``, read as a memory
map), ``noise.npy`` (float32, the noise files end to end) and ``index.json`` (classes, labels, paths,
settings, files skipped while decoding). The cache keeps what the decoder gave: clips are int16 PCM only
when that is lossless for every source, i.e. mono PCM of at most 16 bits (or A-law/mu-law) already at the
target rate: Speech Commands files are, so int16 keeps them exactly at half the disk and page-cache size
of float32 (the full v0.02 archive: 3.4 GB instead of 6.8 GB). Otherwise the clips are float32: 24-bit
and float sources (a float WAV may be louder than full scale), a stereo average (half steps), and
resampled clips (band-limited resampling overshoots full scale: white noise near 0 dBFS reaches 1.4).
Noise stays float32: it is minutes, not hours, and is scaled before mixing.

The key hashes the settings and every file's path, size and mtime, so an edited file or a changed option
builds a new folder; a build is written into a temporary folder and renamed into place only when complete,
so an interrupted build never looks valid. A cache folder whose files are damaged (truncated index or
arrays) is detected when opened, reported, and rebuilt.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kwsbench import settings
from kwsbench.data.audio import BadAudio, bad_file_error, decode_clip, read_file_info
from kwsbench.data.records import (
    CLIP_SAMPLES,
    SAMPLE_RATE,
    SPLITS,
    Clip,
    DatasetIndex,
    Skipped,
    printable,
    printable_tree,
)
from kwsbench.data.workdirs import make_work_folder, remove_stale_work_folders, writable_folder
from kwsbench.errors import ConfigError, DataError
from kwsbench.specs import DatasetSpec

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when the layout changes: old folders then never match a key
INDEX_NAME = "index.json"
NOISE_NAME = "noise.npy"
PCM_SCALE = 32768.0  # soundfile's float scale for 16-bit PCM: int16 / 32768 round-trips exactly
_CHUNK = 64  # clips per worker task: large enough to amortise pickling, small enough for a smooth bar
_BUILDING = ".building-"  # prefix of the temporary folders of builds in progress
_COPY_ROWS = 4096  # rows per block when a split is rewritten without its skipped clips


def to_pcm16(waveforms: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1) ``(..., T)`` -> int16 ``(..., T)``, rounded and clipped (lossy for anything
    that is not already an int16 value / 32768; the cache only uses it where it is not)."""
    return np.clip(np.rint(waveforms * PCM_SCALE), -32768, 32767).astype(np.int16)


def as_float32(waveforms: np.ndarray) -> np.ndarray:
    """Cached clips ``(..., T)`` (int16 or float32) -> float32 ``(..., T)``; the inverse of ``to_pcm16``."""
    if waveforms.dtype == np.int16:
        return waveforms.astype(np.float32) / np.float32(PCM_SCALE)
    return np.asarray(waveforms, dtype=np.float32)


# ---------------------------------------------------------------------------------------------- key
def _file_stamp(path: Path) -> list:
    # Absolute, so `--data-dir ../data` and `/home/me/data` share one cache (abspath: no symlink lookups).
    try:
        st = os.stat(path)
    except OSError as err:  # removed or made unreadable since the dataset was indexed
        raise DataError(f"{printable(path)}: cannot read ({err.strerror}); run the command again") from None
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def _settings_of(index: DatasetIndex, sample_rate: int, clip_samples: int) -> dict:
    return {
        "format": CACHE_FORMAT,
        "dataset": index.name,
        "root": os.path.abspath(index.root),
        "protocol": index.protocol,
        "version": index.version,
        "classes": list(index.classes),  # carries the keywords of folder datasets
        "sample_rate": sample_rate,
        "clip_samples": clip_samples,
    }


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def cache_key(index: DatasetIndex, sample_rate: int = SAMPLE_RATE, clip_samples: int = CLIP_SAMPLES) -> str:
    """sha256 of the settings and of every clip's (path, size, mtime_ns, offset, length, label, split) and
    every noise file's (path, size, mtime_ns); any change gives a new key."""
    stamps: dict[str, list] = {}  # one stat per file: silence clips share their noise file
    clips = []
    for c in index.clips:
        key = str(c.path)
        if key not in stamps:
            stamps[key] = _file_stamp(Path(c.path))
        clips.append([*stamps[key], c.offset, c.num_samples, c.label, c.split])
    noise = [_file_stamp(Path(p)) for p in index.noise_files]
    return _digest(
        {"settings": _settings_of(index, sample_rate, clip_samples), "clips": clips, "noise": noise}
    )


# -------------------------------------------------------------------------------------------- cache
class DamagedCache(DataError):
    """A cache folder whose files do not match its index (truncated, missing): ``build_cache`` rebuilds it."""


def _damaged(path: Path, what: str) -> DamagedCache:
    return DamagedCache(
        f"{printable(path)}: damaged cache ({what}); delete the folder and run kwsbench data prepare again"
    )


def _check_array(path: Path, folder: Path, shape: tuple[int, ...], dtype: str) -> None:
    """Open ``path`` as a memory map (reads the header only) and compare it with what the index says."""
    if not path.is_file():
        raise _damaged(folder, f"{path.name} is missing")
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as err:  # a cut header or fewer bytes than the header declares
        raise _damaged(folder, f"{path.name} cannot be read: {err}") from None
    if array.shape != shape or array.dtype != np.dtype(dtype):
        raise _damaged(
            folder, f"{path.name} holds {array.dtype}{list(array.shape)}, the index says {dtype}{list(shape)}"
        )


@dataclass
class ClipCache:
    """A complete cache folder. ``hit`` is True when it was found rather than built by this call."""

    path: Path
    meta: dict
    hit: bool = False
    build_seconds: float = 0.0

    @classmethod
    def open(cls, path: str | os.PathLike, *, hit: bool = True) -> ClipCache:
        """Open an existing cache folder (one that holds ``index.json``), checking that every array it
        lists is present and of the listed shape; a damaged folder raises ``DamagedCache`` (a DataError)."""
        path = Path(path)
        try:
            meta = json.loads((path / INDEX_NAME).read_text())
        except FileNotFoundError:
            raise DataError(
                f"{printable(path)}: not a clip cache (no {INDEX_NAME}); run kwsbench data prepare first"
            ) from None
        except (OSError, ValueError) as err:  # a cut or garbled index.json (JSONDecodeError is a ValueError)
            raise _damaged(path, f"{INDEX_NAME} cannot be read: {err}") from None
        cache = cls(path=path, meta=meta, hit=hit)
        try:
            cache.build_seconds = float(meta.get("build_seconds", 0.0))
            cache._check_files()
        except (KeyError, TypeError, AttributeError) as err:  # an index.json without the expected fields
            raise _damaged(path, f"{INDEX_NAME} lacks {err}") from None
        return cache

    def _check_files(self) -> None:
        dtype, samples = self.meta["dtype"], self.clip_samples
        for name, split in self.meta["splits"].items():
            count = len(split["labels"])
            if name not in SPLITS or len(split["paths"]) != count:
                raise _damaged(self.path, f"{INDEX_NAME} is inconsistent for split {name!r}")
            _check_array(self.path / split["file"], self.path, (count, samples), dtype)
        lengths = self.meta["noise"]["lengths"]
        if lengths:
            _check_array(self.path / NOISE_NAME, self.path, (int(sum(lengths)),), "float32")

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def clip_samples(self) -> int:
        return int(self.meta["settings"]["clip_samples"])

    @property
    def decode_skipped(self) -> list[Skipped]:
        """Files left out while decoding (with ``skip_bad``): their headers passed, their samples did not."""
        return [Skipped(s["path"], s["reason"]) for s in self.meta.get("decode_skipped", [])]

    def counts(self) -> dict[str, int]:
        """Clips per split, every split of ``SPLITS`` listed."""
        return {s: len(self.meta["splits"].get(s, {}).get("labels", [])) for s in SPLITS}

    def _split_meta(self, name: str) -> dict | None:
        if name not in SPLITS:
            raise DataError(f"split {name!r}: unknown; use one of {', '.join(SPLITS)}")
        return self.meta["splits"].get(name)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(waveforms ``(N, clip_samples)`` memory-mapped read-only, labels int64 ``(N,)``).

        Waveforms keep the cache's dtype (``meta["dtype"]``: int16 or float32) so a 100k-clip split is not
        copied into memory; ``as_float32`` converts a batch.
        """
        meta = self._split_meta(name)
        if meta is None:
            return np.zeros((0, self.clip_samples), self.meta["dtype"]), np.zeros(0, np.int64)
        waves = np.load(self.path / meta["file"], mmap_mode="r")
        return waves, np.asarray(meta["labels"], dtype=np.int64)

    def paths(self, name: str) -> list[str]:
        """The source file of each clip of split ``name``, in cache order."""
        meta = self._split_meta(name)
        return [] if meta is None else list(meta["paths"])

    def noise(self) -> list[np.ndarray]:
        """Each noise file decoded at the cache's sample rate: float32 ``(n_i,)`` views of one array."""
        if not self.meta["noise"]["lengths"]:
            return []
        flat = np.load(self.path / NOISE_NAME, mmap_mode="r")
        ends = np.cumsum(self.meta["noise"]["lengths"])
        return [flat[e - n : e] for e, n in zip(ends, self.meta["noise"]["lengths"], strict=True)]


# ------------------------------------------------------------------------------------------ workers
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker as soon as the process that started it is gone (SIGTERM, SIGKILL, a crash).

    On Linux the kernel does it (``PR_SET_PDEATHSIG``); a daemon thread polling ``getppid`` covers other
    systems and the moment before the ``prctl``. Without this, a killed ``prepare`` leaves its workers
    decoding for as long as their queue lasts.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="kwsbench-parent-watch", daemon=True).start()


def _init_worker(parent_pid: int) -> None:
    # Workers decode in parallel already; resampling (torch) must not start one thread per core in each.
    os.environ["OMP_NUM_THREADS"] = "1"
    # Ctrl-C reaches the whole process group; only the parent acts on it (it stops the pool and cleans
    # up), so no worker prints a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(parent_pid)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Hold SIGINT back in this thread while it spawns workers: they inherit the blocked mask through
    exec, so a Ctrl-C during their start-up (before ``_init_worker`` runs) cannot interrupt an import in
    them; the parent gets the signal as soon as the block ends."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    # The mask holds the signal back from this thread only: the kernel may hand it to another thread (the
    # pool's manager thread), and Python then raises KeyboardInterrupt here anyway, possibly between a
    # worker's spawn and the write of its start-up data (the worker dies with "EOFError: Ran out of input").
    # So the Python handler is deferred too, and a Ctrl-C that came meanwhile is raised after spawning.
    deferred: list[int] = []
    handler = None
    if threading.current_thread() is threading.main_thread():
        handler = signal.signal(signal.SIGINT, lambda signum, frame: deferred.append(signum))
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
            if deferred and callable(handler):
                handler(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt


@dataclass(frozen=True)
class _Failure:
    """A clip of a chunk that did not decode (with ``skip_bad``): its row in the chunk and why."""

    row: int
    path: str
    reason: str


def _decode_chunk(
    clips: Sequence[Clip], sample_rate: int, clip_samples: int, dtype: str, skip_bad: bool
) -> tuple[np.ndarray, list[_Failure]]:
    """``(len(clips), clip_samples)`` of ``dtype`` (int16 | float32) for a run of clips (runs in a worker),
    and the clips that failed to decode (zero rows; only with ``skip_bad``, else the first raises)."""
    out = np.zeros((len(clips), clip_samples), dtype)
    failures: list[_Failure] = []
    for i, c in enumerate(clips):
        try:
            wave = decode_clip(
                c.path,
                offset=c.offset,
                num_samples=c.num_samples,
                sample_rate=sample_rate,
                clip_samples=clip_samples,
            )
        except BadAudio as err:
            if not skip_bad:
                raise bad_file_error(c.path, err.reason, convertible=err.convertible) from None
            failures.append(_Failure(i, printable(c.path), err.reason))
            continue
        if out.dtype == np.int16:
            pcm = to_pcm16(wave)
            # int16 is chosen only where it is exact (``_storage_dtype``); a file whose samples disagree
            # with its header would otherwise be rounded without a word.
            if not np.array_equal(pcm.astype(np.float32) / np.float32(PCM_SCALE), wave):
                raise RuntimeError(f"{printable(c.path)}: decoded samples are not 16-bit values")
            out[i] = pcm
        else:
            out[i] = wave
    return out, failures


def _decode_all(
    jobs: list[tuple[str, int, list[Clip]]],
    arrays: dict[str, np.ndarray],
    sample_rate: int,
    clip_samples: int,
    dtype: str,
    workers: int,
    skip_bad: bool,
    bar: tqdm,
) -> dict[str, list[_Failure]]:
    """Decode each job (split, first row, clips) into ``arrays[split][row:]``; ``workers`` <= 1 runs inline.

    Returns the failures per split, their rows counted in the split.
    """
    failed: dict[str, list[_Failure]] = {}

    def land(split: str, row: int, result: tuple[np.ndarray, list[_Failure]]) -> None:
        block, failures = result
        arrays[split][row : row + len(block)] = block
        failed.setdefault(split, []).extend(_Failure(row + f.row, f.path, f.reason) for f in failures)
        bar.update(len(block))

    if workers <= 1 or len(jobs) == 1:  # one chunk: a pool would only add its start-up (~0.3 s)
        for split, row, clips in jobs:
            land(split, row, _decode_chunk(clips, sample_rate, clip_samples, dtype, skip_bad))
        return failed
    # spawn: a fresh interpreter per worker, safe even when the caller has torch threads running (fork is not).
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(),),
    )
    try:
        with _sigint_blocked():  # submit() spawns the workers
            futures = {
                pool.submit(_decode_chunk, clips, sample_rate, clip_samples, dtype, skip_bad): (s, r)
                for s, r, clips in jobs
            }
        for fut in as_completed(futures):
            land(*futures[fut], fut.result())
    except BaseException:
        # A bad file, Ctrl-C or any error: drop the queued chunks, let the running ones finish (a chunk is
        # under a second), then the caller removes the temporary folder.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    for rows in failed.values():
        rows.sort(key=lambda f: f.row)
    return failed


def _decode_noise(
    files: Iterable[Path], sample_rate: int, skip_bad: bool
) -> tuple[np.ndarray, list[Path], list[int], list[_Failure]]:
    """The noise files end to end (float32), the files kept, their lengths, and the files that failed."""
    waves, kept, failures = [], [], []
    for p in files:
        try:
            length = read_file_info(p).frames_at(sample_rate)
            waves.append(decode_clip(p, sample_rate=sample_rate, clip_samples=length))
            kept.append(p)
        except BadAudio as err:
            if not skip_bad:
                raise bad_file_error(p, err.reason, convertible=err.convertible) from None
            failures.append(_Failure(-1, printable(p), err.reason))
    flat = np.concatenate(waves) if waves else np.zeros(0, np.float32)
    return flat.astype(np.float32), kept, [len(w) for w in waves], failures


def _storage_dtype(index: DatasetIndex, sample_rate: int) -> str:
    """int16 when it is lossless for every clip's source, else float32 (see the module doc)."""
    for path in dict.fromkeys(c.path for c in index.clips):
        try:
            if not read_file_info(path).exact_in_int16(sample_rate):
                return "float32"
        except BadAudio:  # decoding will stop on it, or skip it with skip_bad
            continue
    return "int16"


def _without_rows(folder: Path, split: str, array: np.ndarray, drop: set[int]) -> None:
    """Rewrite ``folder/<split>.npy`` without rows ``drop``, block by block (a split may exceed memory)."""
    keep = np.array([i for i in range(array.shape[0]) if i not in drop], dtype=np.int64)
    tmp = folder / f"{split}.compact.npy"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=array.dtype, shape=(len(keep), array.shape[1]))
    for start in range(0, len(keep), _COPY_ROWS):
        rows = keep[start : start + _COPY_ROWS]
        out[start : start + len(rows)] = array[rows]
    out.flush()
    del out
    os.replace(tmp, folder / f"{split}.npy")


def _write_cache(
    index: DatasetIndex,
    folder: Path,
    key: str,
    sample_rate: int,
    clip_samples: int,
    workers: int,
    skip_bad: bool,
    progress: bool,
) -> dict:
    """Decode everything into ``folder`` and return the index.json content (written last by the caller)."""
    by_split = {s: index.split(s) for s in SPLITS}
    dtype = _storage_dtype(index, sample_rate)
    label_of = {c: i for i, c in enumerate(index.classes)}
    arrays, jobs = {}, []
    for split, clips in by_split.items():
        if not clips:
            continue
        arrays[split] = np.lib.format.open_memmap(
            folder / f"{split}.npy", mode="w+", dtype=dtype, shape=(len(clips), clip_samples)
        )
        jobs += [(split, i, clips[i : i + _CHUNK]) for i in range(0, len(clips), _CHUNK)]
    total = sum(len(c) for c in by_split.values())
    with tqdm(
        total=total, unit="clip", desc=f"caching {index.name}", disable=not progress, leave=False
    ) as bar:
        failed = _decode_all(jobs, arrays, sample_rate, clip_samples, dtype, workers, skip_bad, bar)
    for arr in arrays.values():
        arr.flush()
    splits_meta = {}
    for split, clips in by_split.items():
        if not clips:
            continue
        drop = {f.row for f in failed.get(split, [])}
        if drop:
            _without_rows(folder, split, arrays[split], drop)
        kept = [c for i, c in enumerate(clips) if i not in drop]
        if not kept:
            (folder / f"{split}.npy").unlink()
            continue
        splits_meta[split] = {
            "file": f"{split}.npy",
            "labels": [label_of[c.label] for c in kept],
            "paths": [str(c.path) for c in kept],
            "offsets": [c.offset for c in kept],
        }
    del arrays
    noise, noise_kept, lengths, noise_failed = _decode_noise(index.noise_files, sample_rate, skip_bad)
    np.save(folder / NOISE_NAME, noise)
    skipped: dict[str, str] = {}  # one entry per file: every silence crop of a bad noise file fails alike
    for f in [*noise_failed, *(f for rows in failed.values() for f in rows)]:
        skipped.setdefault(f.path, f.reason)
    for path, reason in skipped.items():
        log.warning("skipping %s: %s", path, reason)
    return {
        "key": key,
        "source": _digest(_settings_of(index, sample_rate, clip_samples)),
        "settings": _settings_of(index, sample_rate, clip_samples),
        "dtype": dtype,
        "classes": list(index.classes),
        "splits": splits_meta,
        "noise": {"file": NOISE_NAME, "paths": [str(p) for p in noise_kept], "lengths": lengths},
        "decode_skipped": [{"path": p, "reason": r} for p, r in sorted(skipped.items())],
    }


def _prune_stale(cache_root: Path, keep: Path, source: str) -> None:
    """Remove older caches of the same dataset and settings whose files have since changed, and the
    temporary folders of builds whose process is gone (see ``workdirs``)."""
    remove_stale_work_folders(cache_root, _BUILDING)
    for other in cache_root.iterdir():
        if other == keep or other.name.startswith(".") or not (other / INDEX_NAME).is_file():
            continue
        try:
            stale = json.loads((other / INDEX_NAME).read_text()).get("source") == source
        except (OSError, ValueError):
            continue
        if stale:
            log.info("removing stale cache %s (its source files changed)", printable(other))
            shutil.rmtree(other, ignore_errors=True)


def _cache_root(cache_root: str | os.PathLike | None) -> tuple[Path, str, str]:
    """(folder, how the user named it, the fix) for messages about the cache folder."""
    if cache_root is not None:
        path = Path(cache_root).expanduser()
        return path, f"--cache-dir {printable(path)}", "pass --cache-dir a folder you can write to"
    path = settings.cache_dir()
    if os.environ.get("KWSBENCH_CACHE"):
        return (
            path,
            f"KWSBENCH_CACHE={printable(path)}",
            "set KWSBENCH_CACHE to a folder you can write to, or pass --cache-dir",
        )
    return (
        path,
        f"cache folder {printable(path)}",
        "set KWSBENCH_CACHE or pass --cache-dir to a folder you can write to",
    )


def _open_complete(final: Path) -> ClipCache | None:
    """The cache in ``final`` when it is complete; a damaged one is reported, moved aside and removed."""
    if not (final / INDEX_NAME).is_file():
        return None
    try:
        return ClipCache.open(final, hit=True)
    except DamagedCache as err:
        log.warning("%s; rebuilding it", err)
    # Renamed first so that no other process opens it half-deleted; a twin may have removed it already.
    doomed = final.with_name(f"{_BUILDING}{os.getpid()}@damaged.{final.name}")
    with contextlib.suppress(OSError):
        os.rename(final, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return None


def build_cache(
    index: DatasetIndex,
    cache_root: str | os.PathLike | None = None,
    workers: int = 2,
    progress: bool = True,
    *,
    skip_bad: bool | None = None,
    sample_rate: int = SAMPLE_RATE,
    clip_samples: int = CLIP_SAMPLES,
) -> ClipCache:
    """The cache of ``index`` under ``cache_root`` (default ``settings.cache_dir()``): opened when its key
    exists and its files are intact, else decoded by ``workers`` processes and written atomically.

    Each clip is ``load_clip(path, offset, num_samples)``, ``(clip_samples,)``, stored as int16 or float32.
    A clip that does not decode stops the build (DataError naming it), or with ``skip_bad`` is left out
    and listed in ``decode_skipped``; ``skip_bad`` None takes it from ``index.spec`` (False without one).
    """
    if skip_bad is None:
        skip_bad = index.spec.skip_bad if index.spec is not None else False
    if not index.clips:
        raise DataError(
            f"{printable(index.root)}: dataset {index.name!r} has no clips to cache; check --data-dir and --protocol"
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers {workers}: need a whole number of decoding processes, at least 1")
    cache_root, what, fix = _cache_root(cache_root)
    key = cache_key(index, sample_rate, clip_samples)
    final = cache_root / f"{index.name}-{index.protocol}-{key[:16]}"
    cache = _open_complete(final)
    if cache is not None:
        log.info("cache hit: %s", printable(final))
        if cache.decode_skipped and not skip_bad:  # built with --skip-bad: without it, the file stops us
            first = cache.decode_skipped[0]
            raise bad_file_error(first.path, first.reason)
        return cache

    log.info("cache miss: building %s (%d clips, %d workers)", printable(final), len(index.clips), workers)
    writable_folder(cache_root, what, fix)
    start = time.perf_counter()
    tmp = make_work_folder(cache_root, _BUILDING, final.name)
    try:
        meta = _write_cache(index, tmp, key, sample_rate, clip_samples, workers, skip_bad, progress)
        meta["build_seconds"] = round(time.perf_counter() - start, 3)
        (tmp / INDEX_NAME).write_text(json.dumps(meta) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / INDEX_NAME).is_file():  # not a concurrent twin build that won the race
                raise
            log.info("cache %s was completed by another process meanwhile", printable(final))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _prune_stale(cache_root, final, meta["source"])
    cache = ClipCache.open(final, hit=False)
    log.info("cache built: %s in %.1f s", printable(final), cache.build_seconds)
    return cache


# ------------------------------------------------------------------------------------------ prepare
@dataclass
class PrepareResult:
    """What ``kwsbench data prepare`` did: the cache folder, hit or built, and what it holds.

    ``skipped`` lists every file left out with ``--skip-bad`` (``path``, ``reason``): those the header
    check refused (as ``data summary`` lists them) and those that failed to decode.
    """

    dataset: str
    data_dir: str
    protocol: str
    version: str | None
    classes: list[str]
    path: str
    key: str
    hit: bool
    build_seconds: float  # of the build that made the cache (an earlier call when ``hit``)
    seconds: float  # this call: indexing, any download, and the build or lookup
    clips: dict[str, int]
    noise_files: int
    skipped: list[dict[str, str]] = field(default_factory=list)
    download: dict | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON types; names that are not UTF-8 appear escaped (``caf\\\\xe9``), so any output prints."""
        return printable_tree(asdict(self))  # type: ignore[return-value]

    def describe(self) -> str:
        """A few human-readable lines for the CLI."""
        state = (
            f"cache hit in {self.seconds:.1f} s (nothing decoded)"
            if self.hit
            else f"cache built in {self.build_seconds:.1f} s"
        )
        lines = [
            f"{self.dataset} ({self.protocol}{', ' + self.version if self.version else ''}) from {self.data_dir}",
            f"{state}: {self.path}",
            "clips: "
            + ", ".join(f"{s} {n}" for s, n in self.clips.items())
            + f"; noise files {self.noise_files}",
            f"classes ({len(self.classes)}): {', '.join(self.classes)}",
        ]
        if self.skipped:
            lines.append(f"skipped bad files: {len(self.skipped)}")
            lines += [f"  {s['path']}: {s['reason']}" for s in self.skipped[:10]]
            if len(self.skipped) > 10:
                lines.append(f"  ... and {len(self.skipped) - 10} more (see --json)")
        if self.download:
            how = "downloaded" if self.download["fetched"] else "already present"
            check = (
                "sha256 verified" if self.download["verified"] else "sha256 unverified (no published value)"
            )
            lines.append(f"archive {self.download['archive']}: {how}, {check}")
        lines += self.notes
        return printable("\n".join(lines))


def prepare(
    spec: DatasetSpec,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 2,
    download: str | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Index the dataset ``spec`` describes and build (or find) its clip cache; with ``download`` (e.g.
    "v0.02") first fetch that official archive into ``spec.data_dir``."""
    from kwsbench.data.datasets import load_dataset
    from kwsbench.data.download import fetch_official

    start = time.perf_counter()
    fetched = None
    if download:
        fetched = fetch_official(spec.dataset, download, spec.data_dir, progress=progress).to_dict()
    index = load_dataset(spec)
    cache = build_cache(index, cache_dir, workers=workers, progress=progress, skip_bad=spec.skip_bad)
    skipped = {s.path: s.reason for s in [*index.skipped, *cache.decode_skipped]}
    return PrepareResult(
        dataset=index.name,
        data_dir=printable(index.root),
        protocol=index.protocol,
        version=index.version,
        classes=cache.classes,
        path=str(cache.path),
        key=cache.key,
        hit=cache.hit,
        build_seconds=cache.build_seconds,
        seconds=round(time.perf_counter() - start, 3),
        clips=cache.counts(),
        noise_files=len(cache.meta["noise"]["paths"]),
        skipped=[{"path": p, "reason": r} for p, r in sorted(skipped.items())],
        download=fetched,
        notes=list(index.notes),
    )
