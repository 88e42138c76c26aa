"""The official test-set folder: exact class counts, speakers, duplicates (checked by hashing), mini split."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict

import pytest

from kwsbench.data.datasets import load_dataset
from kwsbench.data.records import SILENCE, SPLITS, UNKNOWN
from kwsbench.errors import ConfigError
from kwsbench.specs import DatasetSpec

README_COUNTS = {
    "yes": 334, "no": 333, "up": 343, "down": 323, "left": 339, "right": 314, "on": 324,
    "off": 332, "stop": 345, "go": 324, UNKNOWN: 334, SILENCE: 320,
}  # fmt: skip


@pytest.fixture(scope="module")
def folder(shared_data):
    return shared_data / "speech_commands_test_set_v0.02"


@pytest.fixture(scope="module")
def official(folder):
    return load_dataset(DatasetSpec.create("speech_commands_test_set", folder))


@pytest.fixture(scope="module")
def mini(folder):
    return load_dataset(DatasetSpec.create("speech_commands_test_set", folder, protocol="mini"))


def test_official_counts_match_the_readme(official):
    assert official.classes == list(README_COUNTS)
    assert Counter(c.label for c in official.clips) == README_COUNTS
    assert len(official.clips) == 3_965 and {c.split for c in official.clips} == {"test"}
    assert len({c.speaker for c in official.clips if c.speaker}) == 195
    assert official.version == "v2"


def test_unknown_names_give_word_and_speaker(official):
    clip = next(c for c in official.clips if c.path.name == "backward_0c540988_nohash_0.wav.wav")
    assert (clip.label, clip.word, clip.speaker) == (UNKNOWN, "backward", "0c540988")
    assert all(c.speaker is None for c in official.clips if c.label == SILENCE)


def test_duplicates_agree_with_hashing_every_file(official, folder):
    by_hash = defaultdict(list)
    for path in folder.rglob("*.wav"):
        by_hash[hashlib.sha256(path.read_bytes()).hexdigest()].append(path.relative_to(folder).as_posix())
    expected = sorted(sorted(g) for g in by_hash.values() if len(g) > 1)
    assert sorted(official.duplicate_groups) == expected
    assert len(expected) == 79 and sum(len(g) - 1 for g in expected) == 81
    clip_of = {c.path.relative_to(folder).as_posix(): c for c in official.clips}
    for group in expected:
        assert len({clip_of[p].label for p in group}) == 1
        assert len({clip_of[p].speaker for p in group}) == 1


def test_mini_is_speaker_disjoint_and_keeps_every_clip(mini):
    assert Counter(c.label for c in mini.clips) == README_COUNTS
    speakers = {s: {c.speaker for c in mini.clips if c.split == s and c.speaker} for s in SPLITS}
    assert all(speakers.values())
    assert sum(len(v) for v in speakers.values()) == 195  # a shared speaker would be counted twice


def test_no_duplicate_group_straddles_splits(mini, folder):
    split_of = {c.path.relative_to(folder).as_posix(): c.split for c in mini.clips}
    assert mini.duplicate_groups
    for group in mini.duplicate_groups:
        assert len({split_of[p] for p in group}) == 1


def test_mini_is_deterministic(mini, folder):
    again = load_dataset(DatasetSpec.create("speech_commands_test_set", folder, protocol="mini"))
    assert [(c.path, c.split) for c in again.clips] == [(c.path, c.split) for c in mini.clips]


def test_training_protocols_are_refused(folder):
    with pytest.raises(ConfigError, match="--dataset speech_commands"):
        load_dataset(DatasetSpec.create("speech_commands_test_set", folder, protocol="12"))
