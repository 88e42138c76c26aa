"""Custom one-folder-per-label data: UTF-8 labels, `_unknown_` from other folders, noise, bad files."""

from __future__ import annotations

import unicodedata
from collections import Counter

import numpy as np
import pytest

from kwsbench.data.datasets import load_dataset
from kwsbench.data.records import SILENCE, SPLITS, UNKNOWN
from kwsbench.errors import ConfigError, DataError
from kwsbench.specs import DatasetSpec


@pytest.fixture
def custom(tmp_path, write_wav):
    root = tmp_path / "custom"
    level = iter(np.linspace(0.01, 0.9, 200))
    # "café" is stored decomposed, as macOS writes it; users type it composed.
    for label in (unicodedata.normalize("NFD", "café"), "ja", "日本", "other"):
        for speaker in ("anna", "bob", "chen", "dana", "emil", "fay", "gus", "hal"):
            for n in range(2):
                write_wav(root / label / f"{speaker}_nohash_{n}.wav", np.full(1_600, next(level)))
    write_wav(
        root / "_background_noise_" / "fan.wav", np.full(192_000, 0.02)
    )  # 12 s: 1.2 s in each 10 % range
    return root


def test_keywords_and_unknown(custom):
    index = load_dataset(DatasetSpec.create("folder", custom, keywords="café,ja"))
    assert index.classes == ["café", "ja", UNKNOWN, SILENCE] and index.protocol == "mini"
    assert {c.word for c in index.clips if c.label == UNKNOWN} <= {"日本", "other"}
    assert Counter(c.label for c in index.clips if c.label != SILENCE and c.label != UNKNOWN) == {
        "café": 16,
        "ja": 16,
    }


def test_mini_split_is_speaker_disjoint_and_balanced(custom):
    index = load_dataset(DatasetSpec.create("folder", custom, keywords=["café", "ja"]))
    speakers = {s: {c.speaker for c in index.clips if c.split == s and c.speaker} for s in SPLITS}
    assert sum(len(v) for v in speakers.values()) == 8
    counts = Counter((c.split, c.label) for c in index.clips)
    for split in SPLITS:
        mean = (counts[split, "café"] + counts[split, "ja"]) // 2
        assert counts[split, SILENCE] == mean
        assert counts[split, UNKNOWN] == min(mean, 2 * counts[split, "ja"])  # 日本 + other hold as many as ja


def test_every_folder_is_a_class_without_keywords(custom):
    index = load_dataset(DatasetSpec.create("folder", custom))
    assert index.classes == ["café", "ja", "other", "日本", SILENCE]


def test_missing_keyword_is_named(custom):
    with pytest.raises(ConfigError, match="nein"):
        load_dataset(DatasetSpec.create("folder", custom, keywords="ja,nein"))


def test_bad_file_stops_the_load_or_is_skipped(custom, bad_file, bad_kind):
    bad = bad_file(bad_kind, custom / "ja" / "zed_nohash_0.wav")
    with pytest.raises(DataError) as err:
        load_dataset(DatasetSpec.create("folder", custom, keywords="ja"))
    assert str(err.value).startswith(f"{bad}: ") and "--skip-bad" in str(err.value)
    index = load_dataset(DatasetSpec.create("folder", custom, keywords="ja", skip_bad=True))
    assert [s.path for s in index.skipped] == [str(bad)]
    assert all(c.path != bad for c in index.clips)


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no label folders"):
        load_dataset(DatasetSpec.create("folder", tmp_path / "empty"))
