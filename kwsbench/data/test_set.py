"""The official Speech Commands test-set archive (`speech_commands_test_set_v0.0x`): keyword folders,
`_unknown_/<word>_<speaker>_nohash_<n>.wav.wav` and `_silence_/<number>.wav`.

Protocol ``official`` puts every clip in "test" (the paper's reported test split); ``mini`` splits the folder
speaker-disjointly into a small honest benchmark.
"""

from __future__ import annotations

import re
from pathlib import Path

from kwsbench.data.records import SILENCE, UNKNOWN, Clip
from kwsbench.data.speech_commands import KEYWORDS, normalize_version, word_folders
from kwsbench.data.splits import DatasetPlan, assign_mini, audio_files, audio_stem, speaker_from_stem
from kwsbench.errors import ConfigError, DataError

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


def build(
    root: Path,
    *,
    protocol: str | None,
    keywords: list[str] | None,
    noise_dir: Path | str | None,
    version: str | None,
    fractions: tuple[float, float, float],
) -> DatasetPlan:
    """Read the test-set layout under ``root`` into a plan under ``protocol`` (default ``official``)."""
    if keywords:
        raise ConfigError("--keywords: the test-set archive's classes are its folders; leave --keywords out")
    if noise_dir is not None:
        raise ConfigError("--noise-dir: the test-set archive brings its own _silence_/ clips; leave it out")
    words = _ordered(list(word_folders(root)))
    if not words:
        raise DataError(f"{root}: no keyword folders found; {archive_fix(root)}")
    match = _VERSION_IN_NAME.search(root.resolve().name)
    version = normalize_version(version) or (f"v{match[1]}" if match else None)

    clips: list[Clip] = []
    for word in words:
        for path in audio_files(root / word):
            clips.append(
                Clip(path, word, "test", speaker=speaker_from_stem(audio_stem(path.name)), word=word)
            )
    classes = list(words)
    if (root / UNKNOWN).is_dir():
        classes.append(UNKNOWN)
        for path in audio_files(root / UNKNOWN):
            # `<word>_<speaker>_nohash_<n>`: the word never contains "_", so it is the first token.
            word, _, rest = audio_stem(path.name).partition("_")
            clips.append(Clip(path, UNKNOWN, "test", speaker=speaker_from_stem(rest), word=word))
    silence_files = audio_files(root / SILENCE) if (root / SILENCE).is_dir() else []
    if silence_files:
        classes.append(SILENCE)
        clips.extend(Clip(path, SILENCE, "test") for path in silence_files)

    notes: list[str] = []
    if protocol == "mini":
        clips = assign_mini(clips, fractions)
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
    )
