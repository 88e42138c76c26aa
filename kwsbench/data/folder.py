"""Custom keyword data: one folder per label (any name), optional `_background_noise_/`.

The keywords the user names are classes; every other folder becomes `_unknown_` (a folder named
`_unknown_` or `_silence_` is used as that class directly). Without ``keywords`` every folder is a class.
A folder name that is not UTF-8 becomes its escaped form (``caf\\xe9``); a folder without WAV or FLAC
files is reported like a bad file, never silently made a class without clips.
Speakers come from file names (``splits.speaker_from_stem``: ``<speaker>_nohash_<n>``, else the stem before
the last ``_``, else none, and such a clip is split by a hash of its file name).

Protocols: ``mini`` (default; speaker-disjoint hash split) or ``official`` when the folder carries
`validation_list.txt` and `testing_list.txt` like the Speech Commands archive.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from kwsbench.data.layout import Layout
from kwsbench.data.records import SILENCE, UNKNOWN, Clip, Skipped, printable
from kwsbench.data.speech_commands import noise_files_in
from kwsbench.data.splits import (
    BACKGROUND_NOISE,
    DatasetPlan,
    assign_mini,
    audio_files,
    audio_stem,
    empty_folder,
    read_split_lists,
    relative_name,
    speaker_from_stem,
    sub_folders,
)
from kwsbench.errors import ConfigError, DataError
from kwsbench.specs import DatasetSpec

# The first protocol is the default; load_dataset checks the choice.
PROTOCOLS: tuple[str, ...] = ("mini", "official")
_FIX = "create one sub-folder of WAV/FLAC files per label"


def _label(name: str) -> str:
    # macOS file systems hand back decomposed names ("cafe" + U+0301); users type composed ones. A name that
    # is not UTF-8 becomes its escaped form, so a class name can always be printed and written to JSON.
    return unicodedata.normalize("NFC", printable(name))


def missing_fix(root: Path) -> str:
    """How to make a folder dataset in ``root``."""
    return f"create {printable(root)} with one sub-folder of WAV files per label"


def build(spec: DatasetSpec, root: Path, protocol: str) -> DatasetPlan:
    """Read one-folder-per-label data under ``root`` into a plan under ``protocol`` (mini or official)."""
    if spec.version is not None:
        raise ConfigError("--version applies to Speech Commands only; leave it out for --dataset folder")
    ignored: list[Skipped] = []
    found = {
        _label(p.name): (p, audio_files(p, ignored))
        for p in sub_folders(root, ignored)
        if p.name != BACKGROUND_NOISE
    }
    keys = [_label(k) for k in spec.keywords] if spec.keywords else None
    empty = [name for name, (_, files) in found.items() if not files]
    for name in empty:
        if keys is not None and name in keys:
            raise DataError(
                f"--keywords {name}: {printable(found[name][0])} holds no WAV or FLAC files; "
                f"add recordings or leave {name} out of --keywords"
            )
        ignored.append(empty_folder(found[name][0]))
    folders = {name: value for name, value in found.items() if name not in empty}
    labels = [name for name in folders if name not in (UNKNOWN, SILENCE)]
    if not labels:
        raise DataError(f"{printable(root)}: no label folders with WAV or FLAC files found; {_FIX}")
    keys = keys or labels
    missing = [k for k in keys if k not in folders]
    if missing:
        raise ConfigError(
            f"--keywords {missing}: no such folder under {printable(root)}; folders are {labels}"
        )

    lists = read_split_lists(root, "add them or use --protocol mini") if protocol == "official" else None
    clips: list[Clip] = []
    for name, (_, files) in folders.items():
        label = name if name in keys or name == SILENCE else UNKNOWN
        for path in files:
            speaker = None if label == SILENCE else speaker_from_stem(audio_stem(path.name))
            split = "train" if lists is None else lists.get(relative_name(path, root), "train")
            clips.append(Clip(path, label, split, speaker=speaker, word=None if label == SILENCE else name))
    notes: list[str] = []
    if lists is None:
        clips = assign_mini(clips, spec.fractions)
        notes.append(
            "mini: speaker-disjoint split by SHA-1 of the speaker id; clips without one by their name"
        )
    else:
        notes.append("splits from validation_list.txt and testing_list.txt; other clips are training")
    notes.append("speaker = name before _nohash_, else the stem before the last _, else none")

    has_unknown = any(c.label == UNKNOWN for c in clips)
    has_silence_files = any(c.label == SILENCE for c in clips)
    noise = [] if has_silence_files else noise_files_in(root, spec.noise_dir, ignored)
    classes = [*keys, *([UNKNOWN] if has_unknown else []), *([SILENCE] if has_silence_files or noise else [])]
    silence = {"source": f"files in {SILENCE}/"} if has_silence_files else {}
    return DatasetPlan(
        name="folder",
        root=root,
        protocol=protocol,
        classes=classes,
        clips=clips,
        keywords=keys,
        noise_files=noise,
        rebalance=has_unknown or bool(noise),
        notes=notes,
        silence=silence,
        ignored=ignored,
    )


# The registry entry (``datasets.DATASETS``).
LAYOUT = Layout(
    "folder",
    PROTOCOLS,
    build,
    missing_fix,
    protocol_hint="official needs validation_list.txt and testing_list.txt in the folder",
)
