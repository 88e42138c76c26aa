"""Byte-identical files: find them cheaply, and keep every group inside one split.

Files are bucketed by (size, digest of the first bytes) first, so only files that agree there are hashed
in full: on a Speech Commands folder almost every file has the same size, but few share their first 4 KiB.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from kwsbench.data.records import Clip

HEAD_BYTES = 4096


@dataclass(frozen=True)
class Fingerprint:
    """A file's size and the digest of its first ``HEAD_BYTES`` bytes."""

    size: int
    head_digest: bytes


def fingerprint(head: bytes, size: int) -> Fingerprint:
    """The cheap fingerprint of a file of ``size`` bytes whose first bytes are ``head``."""
    return Fingerprint(size, hashlib.blake2b(head[:HEAD_BYTES], digest_size=16).digest())


def _full_digest(path: Path) -> bytes:
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def find_duplicate_groups(files: Iterable[tuple[Path, Fingerprint]]) -> list[list[Path]]:
    """Groups (two or more paths, sorted) of byte-identical files, sorted by their first path."""
    buckets: dict[Fingerprint, list[Path]] = defaultdict(list)
    for path, fp in files:
        buckets[fp].append(path)
    groups: list[list[Path]] = []
    for paths in buckets.values():
        if len(paths) < 2:
            continue
        if paths[0].stat().st_size <= HEAD_BYTES:  # the head digest already covers the whole file
            groups.append(sorted(paths, key=str))
            continue
        by_digest: dict[bytes, list[Path]] = defaultdict(list)
        for path in paths:
            by_digest[_full_digest(path)].append(path)
        groups.extend(sorted(g, key=str) for g in by_digest.values() if len(g) > 1)
    return sorted(groups, key=lambda g: str(g[0]))


def redundant_copies(groups: Sequence[Sequence[object]]) -> int:
    """How many files could be deleted without losing a recording: sum of (group size - 1)."""
    return sum(len(g) - 1 for g in groups)


def unify_duplicate_splits(clips: Sequence[Clip], groups: Sequence[Sequence[Path]]) -> tuple[list[Clip], int]:
    """Move every member of a duplicate group to the split of its first member (by sorted path).

    A recording in train and test would leak; this holds in every protocol. Returns (clips, clips moved).
    """
    target: dict[Path, str] = {}
    split_of = {c.path: c.split for c in clips if c.num_samples is None}
    for group in groups:
        first = split_of.get(group[0])
        for path in group:
            if first is not None:
                target[path] = first
    moved = 0
    out: list[Clip] = []
    for clip in clips:
        new = target.get(clip.path) if clip.num_samples is None else None
        if new is not None and new != clip.split:
            clip, moved = replace(clip, split=new), moved + 1
        out.append(clip)
    return out, moved
