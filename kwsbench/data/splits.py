"""How clips get their split and how classes are balanced: official lists, the `mini` speaker hash,
unknown subsampling and silence crops, and the plan a dataset layout hands to ``datasets.load_dataset``.

Everything here is deterministic: hashes are SHA-1 of the names' bytes (UTF-8, or the raw bytes of a name
that is not UTF-8), never Python's salted ``hash``.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from kwsbench.data.audio import AUDIO_SUFFIXES, UNREAD_AUDIO_SUFFIXES
from kwsbench.data.records import CLIP_SAMPLES, SILENCE, SPLITS, UNKNOWN, Clip, Skipped, printable
from kwsbench.errors import ConfigError, DataError

SPLIT_LISTS: dict[str, str] = {"validation": "validation_list.txt", "test": "testing_list.txt"}
# Each split's silence is cut from its own time range of every noise file, so no noise sample is in two splits.
NOISE_RANGES: dict[str, tuple[float, float]] = {
    "train": (0.0, 0.8),
    "validation": (0.8, 0.9),
    "test": (0.9, 1.0),
}
UNKNOWN_SEED = "kwsbench-unknown-0"
BACKGROUND_NOISE = "_background_noise_"


@dataclass
class DatasetPlan:
    """What a dataset layout found, splits assigned; ``datasets.load_dataset`` checks files, resolves
    duplicates and, when ``rebalance`` is set, subsamples ``_unknown_`` and cuts ``_silence_`` from
    ``noise_files`` to the mean size of the ``keywords`` classes in each split.

    ``ignored``: what the layout found but cannot use (audio in formats kwsbench does not read, dangling
    links, empty label folders); without ``skip_bad`` the first one stops the load, with it they are
    listed among the skipped files."""

    name: str
    root: Path
    protocol: str
    classes: list[str]
    clips: list[Clip]
    keywords: list[str]
    noise_files: list[Path] = field(default_factory=list)
    rebalance: bool = False
    version: str | None = None
    notes: list[str] = field(default_factory=list)
    silence: dict[str, object] = field(default_factory=dict)
    ignored: list[Skipped] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- names
def audio_stem(name: str) -> str:
    """The file name without its audio extensions (``"bed_0c540988_nohash_0.wav.wav"`` -> ``"bed_0c540988_nohash_0"``)."""
    stem = name
    while stem.lower().endswith(AUDIO_SUFFIXES):
        stem = stem[: stem.rfind(".")]
    return stem


def name_bytes(name: str) -> bytes:
    """The bytes of a file name: UTF-8, or the original bytes of a name that is not UTF-8 (PEP 383)."""
    return name.encode("utf-8", "surrogateescape")


def _looks_like_audio(name: str) -> bool:
    return name.lower().endswith(AUDIO_SUFFIXES + UNREAD_AUDIO_SUFFIXES)


_SKIP = "or pass --skip-bad"


def _dangling(path: Path) -> Skipped:
    reason = f"dangling symbolic link (its target {printable(path.readlink())} is missing)"
    return Skipped(printable(path), reason, f"restore its target, remove it, {_SKIP}")


def audio_files(folder: Path, ignored: list[Skipped] | None = None) -> list[Path]:
    """The WAV and FLAC files directly inside ``folder``, sorted by name.

    Entries that look like audio but cannot be read (OGG, MP3, ... ; links to nothing) are appended to
    ``ignored`` with the reason, so that the caller reports them instead of losing them without a word.
    """
    files: list[Path] = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.startswith(".") or not _looks_like_audio(path.name):
            continue
        if path.is_symlink() and not path.exists():
            if ignored is not None:
                ignored.append(_dangling(path))
        elif not path.is_file():
            continue
        elif path.name.lower().endswith(AUDIO_SUFFIXES):
            files.append(path)
        elif ignored is not None:
            kind = path.suffix.lstrip(".").upper()
            reason = f"{kind} audio is not read (kwsbench reads WAV and FLAC)"
            ignored.append(Skipped(printable(path), reason, f"convert it to WAV, remove it, {_SKIP}"))
    return files


def sub_folders(root: Path, ignored: list[Skipped] | None = None) -> list[Path]:
    """The folders directly inside ``root`` that are not hidden, sorted by name; links to nothing are
    appended to ``ignored``."""
    out: list[Path] = []
    for path in sorted(root.iterdir(), key=lambda p: p.name):
        if path.name.startswith("."):
            continue
        if path.is_symlink() and not path.exists():
            if ignored is not None:
                ignored.append(_dangling(path))
        elif path.is_dir():
            out.append(path)
    return out


def empty_folder(folder: Path) -> Skipped:
    """The ``ignored`` entry of a label folder without a WAV or FLAC file."""
    return Skipped(
        printable(folder), "empty label folder (no WAV or FLAC files)", f"add recordings, remove it, {_SKIP}"
    )


_NOHASH = re.compile(r"^(?P<before>.+)_nohash_\d+$")


def speaker_from_stem(stem: str) -> str | None:
    """The speaker a file name carries.

    ``<speaker>_nohash_<n>`` (Speech Commands) gives ``<speaker>``; otherwise the stem before its last
    ``_`` (``"anna_03"`` -> ``"anna"``); a stem without ``_`` carries no speaker (None).
    """
    match = _NOHASH.match(stem)
    if match:
        return match["before"]
    head, sep, _ = stem.rpartition("_")
    return head if sep and head else None


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form: the key of split lists and hashes."""
    return path.relative_to(root).as_posix()


# ------------------------------------------------------------------------------------------ splits
def read_split_lists(root: Path, fix: str) -> dict[str, str]:
    """Map ``word/file.wav`` -> "validation" | "test" from the official lists under ``root``."""
    out: dict[str, str] = {}
    for split, name in SPLIT_LISTS.items():
        path = root / name
        if not path.is_file():
            raise DataError(f"{root}: no {name}; {fix}")
        # surrogateescape: a listed name that is not UTF-8 matches the file's name as Python reads it.
        for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
            if line.strip():
                out[line.strip()] = split
    return out


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate (train, validation, test) fractions: three non-negative numbers summing to 1."""
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError(
            f"split fractions {tuple(fractions)}: need three non-negative numbers (train, validation, test) summing to 1"
        )
    return values  # type: ignore[return-value]


def hash_fraction(key: str) -> float:
    """A stable number in [0, 1) from SHA-1 of ``key``."""
    return int.from_bytes(hashlib.sha1(name_bytes(key)).digest()[:8], "big") / 2**64


def mini_split(key: str, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> str:
    """The `mini` protocol's split for a speaker id (or, for clips without a speaker, a file name)."""
    x, edge = hash_fraction(key), 0.0
    for split, fraction in zip(SPLITS, fractions, strict=True):
        edge += fraction
        if x < edge:
            return split
    return SPLITS[-1]


def assign_mini(clips: Sequence[Clip], fractions: Sequence[float]) -> list[Clip]:
    """Split speaker-disjointly by a hash of the speaker; clips without a speaker by a hash of their name."""
    fractions = check_fractions(fractions)
    return [replace(c, split=mini_split(c.speaker or c.path.name, fractions)) for c in clips]


# --------------------------------------------------------------------------------------- balancing
def keyword_targets(clips: Sequence[Clip], keywords: Sequence[str]) -> dict[str, int]:
    """Per split, the mean keyword-class size rounded down: the size `_unknown_` and `_silence_` get."""
    counts = Counter((c.split, c.label) for c in clips)
    return {s: sum(counts[s, k] for k in keywords) // max(len(keywords), 1) for s in SPLITS}


def subsample_unknown(clips: Sequence[Clip], targets: dict[str, int], root: Path) -> list[Clip]:
    """Keep at most ``targets[split]`` `_unknown_` clips per split: those with the smallest seeded hash of
    their relative path (deterministic, and independent of where the dataset folder lives)."""
    keep: set[Path] = set()
    for split in SPLITS:
        pool = [c for c in clips if c.label == UNKNOWN and c.split == split]
        pool.sort(
            key=lambda c: hashlib.sha1(name_bytes(f"{UNKNOWN_SEED}:{relative_name(c.path, root)}")).digest()
        )
        keep.update(c.path for c in pool[: targets[split]])
    return [c for c in clips if c.label != UNKNOWN or c.path in keep]


def silence_crops(noise: Sequence[tuple[Path, int]], targets: dict[str, int]) -> list[Clip]:
    """``targets[split]`` one-second `_silence_` crops per split from ``noise`` = [(file, samples at 16 kHz)].

    Split ``s`` uses only the range ``NOISE_RANGES[s]`` of each file; crops go round-robin over the files
    that have room and are spread evenly over each file's range (they overlap when many are needed).
    """
    out: list[Clip] = []
    for split in SPLITS:
        n = targets.get(split, 0)
        lo, hi = NOISE_RANGES[split]
        ranges = [(path, int(lo * total), int(hi * total)) for path, total in noise]
        ranges = [r for r in ranges if r[2] - r[1] >= CLIP_SAMPLES]
        if n and not ranges:
            raise DataError(
                f"noise files {[printable(p) for p, _ in noise]}: none has {CLIP_SAMPLES} samples in its "
                f"{split} range {lo:.0%}-{hi:.0%} to cut _silence_ from; add longer noise recordings"
            )
        for i, (path, start, end) in enumerate(ranges):
            count = len(range(i, n, len(ranges)))  # crops j with j % len(ranges) == i
            room = end - start - CLIP_SAMPLES
            for k in range(count):
                offset = start + (2 * k + 1) * room // (2 * count)
                out.append(Clip(path, SILENCE, split, offset=offset, num_samples=CLIP_SAMPLES))
    return out
