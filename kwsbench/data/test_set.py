"""The official Speech Commands test-set archive (`speech_commands_test_set_v0.0x`): keyword folders,
`_unknown_/<word>_<speaker>_nohash_<n>.wav.wav` and `_silence_/<number>.wav`.

Protocol ``official`` puts every clip in "test" (the paper's reported test split); ``mini`` splits the folder
speaker-disjointly into a small honest benchmark.
"""

from __future__ import annotations

import re
from pathlib import Path

from kwsbench.data.layout import Layout
from kwsbench.data.records import SILENCE, UNKNOWN, Clip, Skipped
from kwsbench.data.speech_commands import KEYWORDS, noise_files_in, normalize_version, word_folders
from kwsbench.data.splits import (
    DatasetPlan,
    assign_mini,
    audio_files,
    audio_stem,
    empty_folder,
    speaker_from_stem,
)
from kwsbench.errors import ConfigError, DataError
from kwsbench.specs import DatasetSpec

# The first protocol is the default; load_dataset checks the choice.
PROTOCOLS: tuple[str, ...] = ("official", "mini")
PROTOCOL_HINT = "protocols 12 and 35 need the training archive: --dataset speech_commands"
_VERSION_IN_NAME = re.compile(r"v0\.0([12])")


def archive_fix(root: Path) -> str:
    return (
        f"place speech_commands_test_set_v0.02.tar.gz from download.tensorflow.org/data/ extracted into {root}, "
        "or run kwsbench data prepare --download v0.02"
    )


def _ordered(words: list[str]) -> list[str]:
    """The ten Speech Commands keywords in their usual order, then any other word alphabetically."""
    return [k for k in KEYWORDS if k in words] + sorted(w for w in words if w not in KEYWORDS)


def _word_clips(folder: Path, ignored: list[Skipped]) -> list[Path]:
    """The audio files of one class folder; an empty folder is reported in ``ignored``."""
    paths = audio_files(folder, ignored)
    if not paths:
        ignored.append(empty_folder(folder))
    return paths


def build(spec: DatasetSpec, root: Path, protocol: str) -> DatasetPlan:
    """Read the test-set layout under ``root`` into a plan under ``protocol`` (official or mini)."""
    if spec.keywords:
        raise ConfigError("--keywords: the test-set archive's classes are its folders; leave --keywords out")
    ignored: list[Skipped] = []
    # Background noise is for augmentation only here: the archive brings its own _silence_/ clips, and
    # silence is cut from noise only when a dataset has none.
    noise = noise_files_in(root, spec.noise_dir, ignored) if spec.noise_dir is not None else []
    words = _ordered(list(word_folders(root, ignored)))
    if not words:
        raise DataError(f"{root}: no keyword folders found; {archive_fix(root)}")
    match = _VERSION_IN_NAME.search(root.resolve().name)
    version = normalize_version(spec.version) or (f"v{match[1]}" if match else None)

    clips: list[Clip] = []
    for word in words:
        for path in _word_clips(root / word, ignored):
            clips.append(
                Clip(path, word, "test", speaker=speaker_from_stem(audio_stem(path.name)), word=word)
            )
    classes = list(words)
    if (root / UNKNOWN).is_dir():
        classes.append(UNKNOWN)
        for path in _word_clips(root / UNKNOWN, ignored):
            # `<word>_<speaker>_nohash_<n>`: the word never contains "_", so it is the first token.
            word, _, rest = audio_stem(path.name).partition("_")
            clips.append(Clip(path, UNKNOWN, "test", speaker=speaker_from_stem(rest), word=word))
    silence_files = _word_clips(root / SILENCE, ignored) if (root / SILENCE).is_dir() else []
    if silence_files:
        classes.append(SILENCE)
        clips.extend(Clip(path, SILENCE, "test") for path in silence_files)

    notes: list[str] = []
    if protocol == "mini":
        clips = assign_mini(clips, spec.fractions)
        notes.append(
            "mini: speaker-disjoint split by SHA-1 of the speaker id; _silence_ by SHA-1 of the file name"
        )
    else:
        notes.append("official: every clip is in the test split")
    silence = {"source": f"{len(silence_files)} files in {SILENCE}/ (as released)"} if silence_files else {}
    return DatasetPlan(
        name="speech_commands_test_set",
        root=root,
        protocol=protocol,
        classes=classes,
        clips=clips,
        keywords=words,
        version=version,
        notes=notes,
        silence=silence,
        ignored=ignored,
        noise_files=noise,
    )


# The registry entry (``datasets.DATASETS``).
LAYOUT = Layout("speech_commands_test_set", PROTOCOLS, build, archive_fix, protocol_hint=PROTOCOL_HINT)
