"""Plain records the data package passes around: a clip, a skipped file, a dataset index."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass(frozen=True)
class Skipped:
    """A file left out with ``--skip-bad`` and the one-line reason."""

    path: str
    reason: str


@dataclass
class DatasetIndex:
    """A dataset resolved under a protocol: its clips, classes, noise files and what was found on the way.

    ``duplicate_groups`` lists groups of byte-identical files (paths); ``redundant`` copies = sum(len - 1).
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

    def split(self, name: str) -> list[Clip]:
        return [c for c in self.clips if c.split == name]
