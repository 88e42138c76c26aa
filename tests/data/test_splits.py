"""Split rules: the stable mini hash, fractions, speaker names, silence crops and duplicate handling."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from kwsbench.data.duplicates import find_duplicate_groups, fingerprint, unify_duplicate_splits
from kwsbench.data.records import CLIP_SAMPLES, Clip
from kwsbench.data.splits import (
    NOISE_RANGES,
    assign_mini,
    audio_stem,
    check_fractions,
    mini_split,
    silence_crops,
    speaker_from_stem,
)
from kwsbench.errors import ConfigError, DataError


def test_mini_hash_is_sha1_of_the_key():
    # The first 8 bytes of SHA-1 as a fraction of 2**64: "theo" 0.8108 (validation: 0.8 <= x < 0.9),
    # "jackson" 0.9656 (test), "george" 0.6244 (train); pinned so a change of hash shows up here.
    for key, split in (("theo", "validation"), ("jackson", "test"), ("george", "train")):
        x = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64
        assert split == ("train" if x < 0.8 else "validation" if x < 0.9 else "test")
        assert mini_split(key) == split
    assert mini_split("theo") == "validation" and mini_split("jackson") == "test"


def test_fractions_move_the_edges():
    assert mini_split("jackson", (0.5, 0.5, 0.0)) == "validation"
    assert mini_split("theo", (1.0, 0.0, 0.0)) == "train"


@pytest.mark.parametrize("bad", [(0.8, 0.1), (0.9, 0.2, 0.1), (1.2, -0.1, -0.1)])
def test_bad_fractions_are_refused(bad):
    with pytest.raises(ConfigError, match="summing to 1"):
        check_fractions(bad)


def test_assign_mini_uses_speaker_then_name():
    clips = [
        Clip(Path(f"w/{s}_nohash_{i}.wav"), "w", "train", speaker=s) for s in ("a", "b") for i in range(3)
    ]
    clips.append(Clip(Path("_silence_/1024.wav"), "_silence_", "test"))
    out = assign_mini(clips, (0.8, 0.1, 0.1))
    assert len({c.split for c in out if c.speaker == "a"}) == 1
    assert out[-1].split == mini_split("1024.wav")


@pytest.mark.parametrize(
    ("name", "stem", "speaker"),
    [
        ("0c540988_nohash_3.wav", "0c540988_nohash_3", "0c540988"),
        ("backward_0c540988_nohash_0.wav.wav", "backward_0c540988_nohash_0", "backward_0c540988"),
        ("anna_03.flac", "anna_03", "anna"),
        ("mary_ann_7.WAV", "mary_ann_7", "mary_ann"),
        ("1024.wav", "1024", None),
    ],
)
def test_names_give_stem_and_speaker(name, stem, speaker):
    assert audio_stem(name) == stem
    assert speaker_from_stem(stem) == speaker


def test_silence_crops_stay_in_their_split_range():
    total = 960_000  # 60 s of noise
    crops = silence_crops(
        [(Path("a.wav"), total), (Path("b.wav"), total // 2)], {"train": 7, "validation": 3, "test": 0}
    )
    assert [c.split for c in crops].count("train") == 7 and [c.split for c in crops].count("validation") == 3
    for crop in crops:
        size = total if crop.path.name == "a.wav" else total // 2
        lo, hi = NOISE_RANGES[crop.split]
        assert int(lo * size) <= crop.offset and crop.offset + CLIP_SAMPLES <= int(hi * size)
        assert crop.num_samples == CLIP_SAMPLES


def test_silence_crops_need_room():
    with pytest.raises(DataError, match="validation range"):
        silence_crops([(Path("short.wav"), 100_000)], {"train": 1, "validation": 1, "test": 0})


def test_duplicates_need_the_whole_file_equal(tmp_path, write_wav):
    same = np.linspace(-0.5, 0.5, 8_000)
    other = same.copy()
    other[-1] = 0.0  # differs only after the first 4 KiB
    paths = [write_wav(tmp_path / n, x) for n, x in (("b.wav", same), ("a.wav", same), ("c.wav", other))]
    prints = [(p, fingerprint(p.read_bytes()[:4096], p.stat().st_size)) for p in paths]
    assert find_duplicate_groups(prints) == [[tmp_path / "a.wav", tmp_path / "b.wav"]]


def test_duplicate_group_moves_to_its_first_members_split():
    a, b, c = Path("x/a.wav"), Path("y/b.wav"), Path("z/c.wav")
    clips = [Clip(b, "y", "train"), Clip(a, "x", "test"), Clip(c, "z", "validation")]
    out, moved = unify_duplicate_splits(clips, [[a, b, c]])
    assert [x.split for x in out] == ["test", "test", "test"] and moved == 2
