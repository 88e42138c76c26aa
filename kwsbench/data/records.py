"""Plain records the data package passes around: a clip, a skipped file, a dataset index."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from kwsbench.specs import DatasetSpec

SPLITS: tuple[str, ...] = ("train", "validation", "test")
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
SAMPLE_RATE = 16_000
CLIP_SAMPLES = 16_000  # every clip is fixed to 1 s at 16 kHz


@dataclass(frozen=True)
class Clip:
    """One example: audio at ``path`` (from sample ``offset`` at 16 kHz, ``num_samples`` long, or the whole
    file when ``num_samples`` is None), its class ``label`` and ``split``.

    ``word`` is the source folder's word (``"bed"`` for an ``_unknown_`` clip); ``speaker`` is parsed from
    the file name where the dataset's names carry one (None for silence cut from noise).
    """

    path: Path
    label: str
    split: str
    speaker: str | None = None
    word: str | None = None
    offset: int = 0
    num_samples: int | None = None


def printable(path: str | os.PathLike) -> str:
    """``path`` as readable text: bytes that are not UTF-8 become ``\\xe9`` escapes.

    Python hands such names back with lone surrogates (PEP 383), which no UTF-8 output can print; the
    escaped form can, and names the file unambiguously. A UTF-8 path comes back unchanged.
    """
    text = os.fspath(path)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file system produced: escape it as it is
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def printable_tree(obj: object) -> object:
    """``obj`` (JSON types: dicts, lists, strings) with every string made ``printable``, for ``--json``."""
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, dict):
        return {printable(str(k)): printable_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [printable_tree(v) for v in obj]
    return obj


@dataclass(frozen=True)
class Skipped:
    """A file (or folder) left out with ``--skip-bad``, by ``printable`` name, and the one-line reason;
    ``fix`` is what the error says to do when ``--skip-bad`` is not given ("" for the usual)."""

    path: str
    reason: str
    fix: str = ""


@dataclass
class DatasetIndex:
    """A dataset resolved under a protocol: its clips, classes, noise files and what was found on the way.

    ``duplicate_groups`` lists groups of byte-identical files (paths); ``redundant`` copies = sum(len - 1).
    ``spec`` is the description it was loaded from, with the protocol and version the layout resolved
    (None for an index built by hand).
    """

    name: str
    root: Path
    protocol: str
    classes: list[str]
    clips: list[Clip]
    noise_files: list[Path] = field(default_factory=list)
    duplicate_groups: list[list[str]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    version: str | None = None
    notes: list[str] = field(default_factory=list)
    word_clips: dict[str, int] = field(
        default_factory=dict
    )  # split -> word clips before unknown/silence handling
    silence: dict[str, object] = field(
        default_factory=dict
    )  # how `_silence_` was made (source, ranges, counts)
    spec: DatasetSpec | None = None

    def split(self, name: str) -> list[Clip]:
        return [c for c in self.clips if c.split == name]
