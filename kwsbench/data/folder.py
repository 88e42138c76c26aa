"""Custom keyword data: one folder per label (any UTF-8 name), optional `_background_noise_/`.

The keywords the user names are classes; every other folder becomes `_unknown_` (a folder named
`_unknown_` or `_silence_` is used as that class directly). Without ``keywords`` every folder is a class.
Speakers come from file names (``splits.speaker_from_stem``: ``<speaker>_nohash_<n>``, else the stem before
the last ``_``, else none, and such a clip is split by a hash of its file name).

Protocols: ``mini`` (default; speaker-disjoint hash split) or ``official`` when the folder carries
`validation_list.txt` and `testing_list.txt` like the Speech Commands archive.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from kwsbench.data.records import SILENCE, UNKNOWN, Clip
from kwsbench.data.speech_commands import noise_files_in
from kwsbench.data.splits import (
    BACKGROUND_NOISE,
    DatasetPlan,
    assign_mini,
    audio_files,
    audio_stem,
    read_split_lists,
    relative_name,
    speaker_from_stem,
)
from kwsbench.errors import ConfigError, DataError

# The first protocol is the default; load_dataset checks the choice.
PROTOCOLS: tuple[str, ...] = ("mini", "official")


def _nfc(name: str) -> str:
    # macOS file systems hand back decomposed names ("cafe" + U+0301); users type composed ones.
    return unicodedata.normalize("NFC", name)


def build(
    root: Path,
    *,
    protocol: str | None,
    keywords: list[str] | None,
    noise_dir: Path | str | None,
    version: str | None,
    fractions: tuple[float, float, float],
) -> DatasetPlan:
    """Read one-folder-per-label data under ``root`` into a plan under ``protocol`` (default ``mini``)."""
    if version is not None:
        raise ConfigError("--version applies to Speech Commands only; leave it out for --dataset folder")
    fix = "create one sub-folder of WAV/FLAC files per label"
    folders = {
        _nfc(p.name): p
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith(".") and p.name != BACKGROUND_NOISE
    }
    labels = [name for name in folders if name not in (UNKNOWN, SILENCE)]
    if not labels:
        raise DataError(f"{root}: no label folders found; {fix}")
    keys = [_nfc(k) for k in keywords] if keywords else labels
    missing = [k for k in keys if k not in folders]
    if missing:
        raise ConfigError(f"--keywords {missing}: no such folder under {root}; folders are {labels}")

    lists = read_split_lists(root, "add them or use --protocol mini") if protocol == "official" else None
    clips: list[Clip] = []
    for name, folder in folders.items():
        label = name if name in keys or name == SILENCE else UNKNOWN
        for path in audio_files(folder):
            speaker = None if label == SILENCE else speaker_from_stem(audio_stem(path.name))
            split = "train" if lists is None else lists.get(relative_name(path, root), "train")
            clips.append(Clip(path, label, split, speaker=speaker, word=None if label == SILENCE else name))
    if not clips:
        raise DataError(f"{root}: the label folders hold no .wav or .flac files; {fix}")
    notes: list[str] = []
    if lists is None:
        clips = assign_mini(clips, fractions)
        notes.append(
            "mini: speaker-disjoint split by SHA-1 of the speaker id; clips without one by their name"
        )
    else:
        notes.append("splits from validation_list.txt and testing_list.txt; other clips are training")
    notes.append("speaker = name before _nohash_, else the stem before the last _, else none")

    has_unknown = any(c.label == UNKNOWN for c in clips)
    has_silence_files = any(c.label == SILENCE for c in clips)
    noise = [] if has_silence_files else noise_files_in(root, noise_dir)
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
    )
