"""Google Speech Commands v0.01 / v0.02 in the training-archive layout: one folder per word,
`_background_noise_/`, `validation_list.txt` and `testing_list.txt` (a clip in neither list is training).

Protocols: ``12`` (ten keywords, `_unknown_`, `_silence_`; official splits), ``35`` (every word a class;
30 for v0.01) and ``mini`` (the 12 classes, split speaker-disjointly by a hash of the speaker).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kwsbench.data.layout import Layout
from kwsbench.data.records import SILENCE, UNKNOWN, Clip, Skipped, printable
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

KEYWORDS: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
V1_WORDS: tuple[str, ...] = (
    *KEYWORDS,
    *("bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin"),
    *("nine", "one", "seven", "sheila", "six", "three", "tree", "two", "wow", "zero"),
)
V2_ONLY_WORDS: tuple[str, ...] = ("backward", "follow", "forward", "learn", "visual")
WORDS: dict[str, tuple[str, ...]] = {"v1": V1_WORDS, "v2": V1_WORDS + V2_ONLY_WORDS}
# The first protocol is the default; load_dataset checks the choice.
PROTOCOLS: tuple[str, ...] = ("12", "35", "mini")
_VERSION_ALIASES = {"v1": "v1", "v0.01": "v1", "1": "v1", "v2": "v2", "v0.02": "v2", "2": "v2"}


def archive_fix(root: Path, version: str | None = None) -> str:
    """How to get the training archive into ``root``."""
    v = "v0.01" if version == "v1" else "v0.02"
    return (
        f"place speech_commands_{v}.tar.gz from download.tensorflow.org/data/ extracted into {root}, "
        f"or run kwsbench data prepare --download {v}"
    )


def normalize_version(version: str | None) -> str | None:
    """``"v1"`` | ``"v2"`` | None from the spellings users type (v1, v0.01, 1, ...)."""
    if version is None:
        return None
    try:
        return _VERSION_ALIASES[str(version).lower()]
    except KeyError:
        raise ConfigError(f"--version {version}: unknown Speech Commands version; use v1 or v2") from None


def keyword_list(keywords: Sequence[str] | None) -> list[str]:
    return list(keywords) if keywords else list(KEYWORDS)


def word_folders(root: Path, ignored: list[Skipped] | None = None) -> dict[str, Path]:
    """Word -> folder for every folder under ``root`` that is not hidden and not ``_``-prefixed; links to
    nothing are appended to ``ignored``."""
    return {p.name: p for p in sub_folders(root, ignored) if not p.name.startswith("_")}


def noise_files_in(
    root: Path, noise_dir: Path | str | None, ignored: list[Skipped] | None = None
) -> list[Path]:
    """The background-noise recordings: ``noise_dir`` when given, else ``root/_background_noise_``."""
    folder = Path(noise_dir).expanduser() if noise_dir is not None else root / BACKGROUND_NOISE
    if noise_dir is not None and not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "no such folder"
        raise DataError(f"--noise-dir {printable(folder)}: {what}; point it at a folder of noise WAV files")
    return audio_files(folder, ignored) if folder.is_dir() else []


def build(spec: DatasetSpec, root: Path, protocol: str) -> DatasetPlan:
    """Read the training-archive layout under ``root`` into a plan under ``protocol`` (12, 35 or mini)."""
    keywords, version = spec.keywords, spec.version
    ignored: list[Skipped] = []
    folders = word_folders(root, ignored)
    if not folders:
        raise DataError(f"{root}: no word folders found; {archive_fix(root, normalize_version(version))}")
    detected = "v2" if any(w in folders for w in V2_ONLY_WORDS) else "v1"
    given = normalize_version(version)
    version = given or detected
    extra = sorted(set(folders) - set(WORDS[version]))
    if extra:
        raise DataError(
            f"{root}: folders {extra} are not Speech Commands {version} words; "
            "remove them, pass --version v2, or use --dataset folder"
        )
    notes = [f"version {version} ({'given by --version' if given else 'detected from the word folders'})"]
    missing = [w for w in WORDS[version] if w not in folders]
    if missing:
        notes.append(f"no folder for words {missing}")

    if protocol == "35":
        if keywords:
            raise ConfigError("--keywords: protocol 35 uses every word as a class; leave --keywords out")
        classes, keys = sorted(WORDS[version]), sorted(WORDS[version])
    else:
        keys = keyword_list(keywords)
        unknown_keywords = [k for k in keys if k not in WORDS[version]]
        if unknown_keywords:
            raise ConfigError(f"--keywords {unknown_keywords}: not Speech Commands {version} words")
        classes = [*keys, UNKNOWN, SILENCE]

    lists = None if protocol == "mini" else read_split_lists(root, archive_fix(root, version))
    clips: list[Clip] = []
    for word, folder in folders.items():
        label = word if word in classes else UNKNOWN
        paths = audio_files(folder, ignored)
        if not paths:
            ignored.append(empty_folder(folder))
        for path in paths:
            rel = relative_name(path, root)
            split = "train" if lists is None else lists.get(rel, "train")
            clips.append(
                Clip(path, label, split, speaker=speaker_from_stem(audio_stem(path.name)), word=word)
            )
    if lists is not None:
        present = {relative_name(c.path, root) for c in clips}
        absent = sum(1 for rel in lists if rel not in present)
        if absent:
            notes.append(f"{absent} split-list entries name no file here (a partial copy of the archive)")
        notes.append("splits from validation_list.txt and testing_list.txt; other clips are training")
    else:
        clips = assign_mini(clips, spec.fractions)
        notes.append("mini: speaker-disjoint split by SHA-1 of the speaker id")

    # Protocol 35 cuts no silence, but training still mixes background noise into the words.
    noise = noise_files_in(root, spec.noise_dir, ignored)
    if protocol != "35" and not noise:
        raise DataError(
            f"{root}: no {BACKGROUND_NOISE}/ folder of noise WAVs to cut _silence_ from; "
            f"pass --noise-dir or {archive_fix(root, version)}"
        )
    return DatasetPlan(
        name="speech_commands",
        root=root,
        protocol=protocol,
        classes=classes,
        clips=clips,
        keywords=keys,
        noise_files=noise,
        rebalance=protocol != "35",
        version=version,
        notes=notes,
        silence={} if protocol != "35" else {"source": "none: protocol 35 has no _silence_ class"},
        ignored=ignored,
    )


# The registry entry (``datasets.DATASETS``).
LAYOUT = Layout(
    "speech_commands",
    PROTOCOLS,
    build,
    archive_fix,
    protocol_hint="official needs the test-set archive: --dataset speech_commands_test_set",
)
