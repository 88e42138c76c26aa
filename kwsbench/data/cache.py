"""Decode a dataset's clips once into fixed-length arrays on disk (the "prepare" step) and read them back.

One cache folder per dataset and settings holds ``<split>.npy`` (``(N, clip_samples)``, read as a memory
map), ``noise.npy`` (float32, the noise files end to end) and ``index.json`` (classes, labels, paths,
settings). Clips are int16 PCM when every source is already at the target rate: Speech Commands files are
16-bit PCM, so int16 keeps them exactly at half the disk and page-cache size of float32 (the full v0.02
archive: 3.4 GB instead of 6.8 GB). When any source must be resampled (FSDD at 8 kHz) the clips are
float32, because band-limited resampling overshoots full scale (white noise near 0 dBFS reaches 1.4) and
int16 would clip it. Noise stays float32: it is minutes, not hours, and is scaled before mixing.

The key hashes the settings and every file's path, size and mtime, so an edited file or a changed option
builds a new folder; a build is written into a temporary folder and renamed into place only when complete,
so an interrupted build never looks valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kwsbench import settings
from kwsbench.data.audio import audio_info, load_clip
from kwsbench.data.records import CLIP_SAMPLES, SAMPLE_RATE, SPLITS, Clip, DatasetIndex
from kwsbench.errors import DataError

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the layout changes: old folders then never match a key
INDEX_NAME = "index.json"
NOISE_NAME = "noise.npy"
PCM_SCALE = 32768.0  # soundfile's float scale for 16-bit PCM: int16 / 32768 round-trips exactly
_CHUNK = 64  # clips per worker task: large enough to amortise pickling, small enough for a smooth bar


def to_pcm16(waveforms: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1) ``(..., T)`` -> int16 ``(..., T)``, rounded and clipped."""
    return np.clip(np.rint(waveforms * PCM_SCALE), -32768, 32767).astype(np.int16)


def as_float32(waveforms: np.ndarray) -> np.ndarray:
    """Cached clips ``(..., T)`` (int16 or float32) -> float32 ``(..., T)``; the inverse of ``to_pcm16``."""
    if waveforms.dtype == np.int16:
        return waveforms.astype(np.float32) / np.float32(PCM_SCALE)
    return np.asarray(waveforms, dtype=np.float32)


# ---------------------------------------------------------------------------------------------- key
def _file_stamp(path: Path) -> list:
    # Absolute, so `--data-dir ../data` and `/home/me/data` share one cache (abspath: no symlink lookups).
    st = os.stat(path)
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
@dataclass
class ClipCache:
    """A complete cache folder. ``hit`` is True when it was found rather than built by this call."""

    path: Path
    meta: dict
    hit: bool = False
    build_seconds: float = 0.0

    @classmethod
    def open(cls, path: str | os.PathLike, *, hit: bool = True) -> ClipCache:
        """Open an existing cache folder (one that holds ``index.json``)."""
        path = Path(path)
        meta = json.loads((path / INDEX_NAME).read_text())
        return cls(path=path, meta=meta, hit=hit, build_seconds=meta.get("build_seconds", 0.0))

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def clip_samples(self) -> int:
        return int(self.meta["settings"]["clip_samples"])

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


def _init_worker() -> None:
    # Workers decode in parallel already; resampling (torch) must not start one thread per core in each.
    os.environ["OMP_NUM_THREADS"] = "1"


def _decode_chunk(clips: Sequence[Clip], sample_rate: int, clip_samples: int, dtype: str) -> np.ndarray:
    """``(len(clips), clip_samples)`` of ``dtype`` (int16 | float32) for a run of clips (runs in a worker)."""
    out = np.empty((len(clips), clip_samples), dtype)
    for i, c in enumerate(clips):
        wave = load_clip(
            c.path,
            offset=c.offset,
            num_samples=c.num_samples,
            sample_rate=sample_rate,
            clip_samples=clip_samples,
        )
        out[i] = to_pcm16(wave) if out.dtype == np.int16 else wave
    return out


def _decode_all(
    jobs: list[tuple[str, int, list[Clip]]],
    arrays: dict[str, np.ndarray],
    sample_rate: int,
    clip_samples: int,
    dtype: str,
    workers: int,
    bar: tqdm,
) -> None:
    """Decode each job (split, first row, clips) into ``arrays[split][row:]``; ``workers`` <= 1 runs inline."""
    if workers <= 1 or len(jobs) == 1:  # one chunk: a pool would only add its start-up (~0.3 s)
        for split, row, clips in jobs:
            arrays[split][row : row + len(clips)] = _decode_chunk(clips, sample_rate, clip_samples, dtype)
            bar.update(len(clips))
        return
    # spawn: a fresh interpreter per worker, safe even when the caller has torch threads running (fork is not).
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
        futures = {
            pool.submit(_decode_chunk, clips, sample_rate, clip_samples, dtype): (s, r, len(clips))
            for s, r, clips in jobs
        }
        try:
            for fut in as_completed(futures):
                split, row, n = futures[fut]
                arrays[split][row : row + n] = fut.result()
                bar.update(n)
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _decode_noise(files: Iterable[Path], sample_rate: int) -> tuple[np.ndarray, list[int]]:
    waves = [
        load_clip(p, sample_rate=sample_rate, clip_samples=audio_info(p).frames_at(sample_rate))
        for p in files
    ]
    flat = np.concatenate(waves) if waves else np.zeros(0, np.float32)
    return flat.astype(np.float32), [len(w) for w in waves]


def _storage_dtype(index: DatasetIndex, sample_rate: int) -> str:
    """int16 when no clip needs resampling (lossless for 16-bit sources), else float32 (see the module doc)."""
    rates = {audio_info(p).sample_rate for p in dict.fromkeys(c.path for c in index.clips)}
    return "int16" if rates == {sample_rate} else "float32"


def _write_cache(
    index: DatasetIndex,
    folder: Path,
    key: str,
    sample_rate: int,
    clip_samples: int,
    workers: int,
    progress: bool,
) -> dict:
    """Decode everything into ``folder`` and return the index.json content (written last by the caller)."""
    by_split = {s: index.split(s) for s in SPLITS}
    dtype = _storage_dtype(index, sample_rate)
    label_of = {c: i for i, c in enumerate(index.classes)}
    arrays, splits_meta, jobs = {}, {}, []
    for split, clips in by_split.items():
        if not clips:
            continue
        arrays[split] = np.lib.format.open_memmap(
            folder / f"{split}.npy", mode="w+", dtype=dtype, shape=(len(clips), clip_samples)
        )
        splits_meta[split] = {
            "file": f"{split}.npy",
            "labels": [label_of[c.label] for c in clips],
            "paths": [str(c.path) for c in clips],
            "offsets": [c.offset for c in clips],
        }
        jobs += [(split, i, clips[i : i + _CHUNK]) for i in range(0, len(clips), _CHUNK)]
    total = sum(len(c) for c in by_split.values())
    with tqdm(
        total=total, unit="clip", desc=f"caching {index.name}", disable=not progress, leave=False
    ) as bar:
        _decode_all(jobs, arrays, sample_rate, clip_samples, dtype, workers, bar)
    for arr in arrays.values():
        arr.flush()
    del arrays
    noise, lengths = _decode_noise(index.noise_files, sample_rate)
    np.save(folder / NOISE_NAME, noise)
    return {
        "key": key,
        "source": _digest(_settings_of(index, sample_rate, clip_samples)),
        "settings": _settings_of(index, sample_rate, clip_samples),
        "dtype": dtype,
        "classes": list(index.classes),
        "splits": splits_meta,
        "noise": {"file": NOISE_NAME, "paths": [str(p) for p in index.noise_files], "lengths": lengths},
        "skipped": len(index.skipped),
    }


def _prune_stale(cache_root: Path, keep: Path, source: str) -> None:
    """Remove older caches of the same dataset and settings whose files have since changed, and the
    ``.building-*`` leftovers of builds killed outright more than a day ago (a live build is younger)."""
    for other in cache_root.iterdir():
        if other.name.startswith(".building-") and time.time() - other.stat().st_mtime > 86_400:
            log.info("removing %s, left by an interrupted build", other)
            shutil.rmtree(other, ignore_errors=True)
            continue
        if other == keep or other.name.startswith(".") or not (other / INDEX_NAME).is_file():
            continue
        try:
            stale = json.loads((other / INDEX_NAME).read_text()).get("source") == source
        except (OSError, ValueError):
            continue
        if stale:
            log.info("removing stale cache %s (its source files changed)", other)
            shutil.rmtree(other, ignore_errors=True)


def build_cache(
    index: DatasetIndex,
    cache_root: str | os.PathLike | None = None,
    workers: int = 2,
    progress: bool = True,
    *,
    sample_rate: int = SAMPLE_RATE,
    clip_samples: int = CLIP_SAMPLES,
) -> ClipCache:
    """The cache of ``index`` under ``cache_root`` (default ``settings.cache_dir()``): opened when its key
    exists, else decoded by ``workers`` processes and written atomically.

    Each clip is ``load_clip(path, offset, num_samples)``, ``(clip_samples,)``, stored as int16 or float32.
    """
    if not index.clips:
        raise DataError(
            f"{index.root}: dataset {index.name!r} has no clips to cache; check --data-dir and --protocol"
        )
    cache_root = Path(cache_root).expanduser() if cache_root is not None else settings.cache_dir()
    key = cache_key(index, sample_rate, clip_samples)
    final = cache_root / f"{index.name}-{index.protocol}-{key[:16]}"
    if (final / INDEX_NAME).is_file():
        log.info("cache hit: %s", final)
        return ClipCache.open(final, hit=True)

    log.info("cache miss: building %s (%d clips, %d workers)", final, len(index.clips), workers)
    cache_root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".building-{final.name}-", dir=cache_root))
    try:
        meta = _write_cache(index, tmp, key, sample_rate, clip_samples, workers, progress)
        meta["build_seconds"] = round(time.perf_counter() - start, 3)
        (tmp / INDEX_NAME).write_text(json.dumps(meta) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / INDEX_NAME).is_file():  # not a concurrent twin build that won the race
                raise
            log.info("cache %s was completed by another process meanwhile", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _prune_stale(cache_root, final, meta["source"])
    cache = ClipCache.open(final, hit=False)
    log.info("cache built: %s in %.1f s", final, cache.build_seconds)
    return cache


# ------------------------------------------------------------------------------------------ prepare
@dataclass
class PrepareResult:
    """What ``kwsbench data prepare`` did: the cache folder, hit or built, and what it holds."""

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
    skipped: int
    download: dict | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

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
            lines.append(f"skipped bad files: {self.skipped}")
        if self.download:
            how = "downloaded" if self.download["fetched"] else "already present"
            check = (
                "sha256 verified" if self.download["verified"] else "sha256 unverified (no published value)"
            )
            lines.append(f"archive {self.download['archive']}: {how}, {check}")
        lines += self.notes
        return "\n".join(lines)


def prepare(
    dataset: str,
    data_dir: str | os.PathLike,
    protocol: str | None = None,
    keywords: str | Sequence[str] | None = None,
    noise_dir: str | os.PathLike | None = None,
    skip_bad: bool = False,
    version: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 2,
    download: str | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Index ``dataset`` in ``data_dir`` and build (or find) its clip cache; with ``download`` (e.g. "v0.02")
    first fetch that official archive into ``data_dir``."""
    from kwsbench.data.datasets import load_dataset
    from kwsbench.data.download import fetch_official

    start = time.perf_counter()
    fetched = fetch_official(dataset, download, data_dir, progress=progress).to_dict() if download else None
    index = load_dataset(
        dataset,
        data_dir,
        protocol=protocol,
        keywords=keywords,
        noise_dir=noise_dir,
        version=version,
        skip_bad=skip_bad,
    )
    cache = build_cache(index, cache_dir, workers=workers, progress=progress)
    return PrepareResult(
        dataset=index.name,
        data_dir=str(index.root),
        protocol=index.protocol,
        version=index.version,
        classes=cache.classes,
        path=str(cache.path),
        key=cache.key,
        hit=cache.hit,
        build_seconds=cache.build_seconds,
        seconds=round(time.perf_counter() - start, 3),
        clips=cache.counts(),
        noise_files=len(index.noise_files),
        skipped=len(index.skipped),
        download=fetched,
        notes=list(index.notes),
    )
