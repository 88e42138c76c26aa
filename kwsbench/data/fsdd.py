"""Free Spoken Digit Dataset: `{digit}_{speaker}_{take}.wav`, 8 kHz, variable length, under `recordings/`.

Protocol ``official`` follows the dataset's documented split, takes 0-4 test, and holds out takes 5-9 for
validation (our choice; the dataset defines none); takes 10+ train. ``mini`` splits by a hash of the speaker.
"""

from __future__ import annotations

import re
from pathlib import Path

from kwsbench.data.layout import Layout
from kwsbench.data.records import Clip, Skipped, printable
from kwsbench.data.splits import DatasetPlan, assign_mini, audio_files
from kwsbench.errors import ConfigError, DataError
from kwsbench.specs import DatasetSpec

# The first protocol is the default; load_dataset checks the choice.
PROTOCOLS: tuple[str, ...] = ("official", "mini")
DIGITS: list[str] = [str(d) for d in range(10)]
TEST_TAKES = range(0, 5)
VALIDATION_TAKES = range(5, 10)
_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>.+)_(?P<take>\d+)\.wav$", re.IGNORECASE)


def _split_of_take(take: int) -> str:
    return "test" if take in TEST_TAKES else "validation" if take in VALIDATION_TAKES else "train"


def missing_fix(root: Path) -> str:
    """How to get FSDD into ``root``."""
    return f"clone github.com/Jakobovski/free-spoken-digit-dataset into {printable(root)}"


def build(spec: DatasetSpec, root: Path, protocol: str) -> DatasetPlan:
    """Read FSDD under ``root`` (or ``root/recordings``) into a plan under ``protocol`` (official or mini)."""
    for option, value in (
        ("--keywords", spec.keywords),
        ("--noise-dir", spec.noise_dir),
        ("--version", spec.version),
    ):
        if value:
            raise ConfigError(f"{option}: does not apply to fsdd (classes are the digits 0-9); leave it out")
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    ignored: list[Skipped] = []
    files = audio_files(folder, ignored)
    fix = f"clone github.com/Jakobovski/free-spoken-digit-dataset and pass its folder (with recordings/) as {printable(root)}"
    if not files:
        raise DataError(f"{printable(folder)}: no .wav files; {fix}")
    clips: list[Clip] = []
    for path in files:
        match = _NAME.match(path.name)
        if match is None:
            raise DataError(
                f"{printable(path)}: not an FSDD name ({{digit}}_{{speaker}}_{{take}}.wav); remove it or {fix}"
            )
        split = _split_of_take(int(match["take"]))
        clips.append(Clip(path, match["digit"], split, speaker=match["speaker"], word=match["digit"]))
    if protocol == "mini":
        clips = assign_mini(clips, spec.fractions)
        notes = ["mini: speaker-disjoint split by SHA-1 of the speaker id (FSDD has only 6 speakers)"]
    else:
        notes = [
            "official: takes 0-4 test (the dataset's documented split); takes 5-9 validation (kwsbench's "
            "choice, FSDD defines none); takes 10-49 train"
        ]
    notes.append("8 kHz clips of variable length: resampled to 16 kHz and padded or centre-cropped to 1 s")
    return DatasetPlan(
        name="fsdd",
        root=root,
        protocol=protocol,
        classes=list(DIGITS),
        clips=clips,
        keywords=list(DIGITS),
        notes=notes,
        ignored=ignored,
    )


# The registry entry (``datasets.DATASETS``).
LAYOUT = Layout("fsdd", PROTOCOLS, build, missing_fix)
