"""Speech Commands training-archive layout: official lists, the 12-class mapping and balancing, protocol 35."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import soundfile

from kwsbench.data.audio import load_clip_of
from kwsbench.data.datasets import load_dataset
from kwsbench.data.records import SILENCE, SPLITS, UNKNOWN
from kwsbench.data.speech_commands import KEYWORDS
from kwsbench.errors import ConfigError, DataError
from kwsbench.specs import DatasetSpec


@pytest.fixture(scope="module")
def sample(shared_data):
    return shared_data / "speech_commands_v0.01_sample"


@pytest.fixture(scope="module")
def index12(sample):
    return load_dataset(DatasetSpec.create("speech_commands", sample))


def test_official_lists_give_36_29_25_word_clips(index12):
    assert index12.word_clips == {"train": 36, "validation": 29, "test": 25}
    assert index12.version == "v1" and index12.protocol == "12"
    assert index12.classes == [*KEYWORDS, UNKNOWN, SILENCE]


def test_protocol_12_rebalances_unknown_and_silence_to_the_mean_keyword_size(index12):
    # Each keyword has one clip in each split, so the mean keyword-class size is 10 // 10 = 1 per split;
    # the other 20 words give 26 / 19 / 15 unknown clips (36-10, 29-10, 25-10), subsampled to 1.
    counts = Counter((c.split, c.label) for c in index12.clips)
    for split in SPLITS:
        assert [counts[split, k] for k in KEYWORDS] == [1] * 10
        assert counts[split, UNKNOWN] == 1
        assert counts[split, SILENCE] == 1
    unknown_words = {c.word for c in index12.clips if c.label == UNKNOWN}
    assert not unknown_words & set(KEYWORDS)


def test_silence_is_cut_from_disjoint_ranges_of_each_noise_file(index12):
    assert len(index12.noise_files) == 6
    assert index12.silence["per_split"] == {"train": 1, "validation": 1, "test": 1}
    frames = {p: soundfile.info(p).frames for p in index12.noise_files}
    for clip in (c for c in index12.clips if c.label == SILENCE):
        lo, hi = index12.silence["ranges"][clip.split]
        assert int(lo * frames[clip.path]) <= clip.offset
        assert clip.offset + clip.num_samples <= int(hi * frames[clip.path])
        raw, _ = soundfile.read(clip.path, dtype="float32", start=clip.offset, stop=clip.offset + 16_000)
        np.testing.assert_array_equal(load_clip_of(clip), raw)


def test_protocol_35_on_v1_has_30_word_classes(sample):
    index = load_dataset(DatasetSpec.create("speech_commands", sample, protocol="35"))
    assert len(index.classes) == 30 and UNKNOWN not in index.classes and SILENCE not in index.classes
    assert Counter(c.split for c in index.clips) == {"train": 36, "validation": 29, "test": 25}
    assert set(Counter(c.label for c in index.clips).values()) == {3}


def test_version_override_gives_35_classes(sample):
    index = load_dataset(DatasetSpec.create("speech_commands", sample, protocol="35", version="v2"))
    assert len(index.classes) == 35 and index.version == "v2"
    assert any("no folder for words" in n and "backward" in n for n in index.notes)


def test_mini_protocol_is_speaker_disjoint(sample):
    index = load_dataset(DatasetSpec.create("speech_commands", sample, protocol="mini"))
    speakers = {s: {c.speaker for c in index.clips if c.split == s and c.speaker} for s in SPLITS}
    assert not speakers["train"] & speakers["validation"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["validation"] & speakers["test"]


def _tiny_archive(root, write_wav, v2_word=False):
    words = (("yes", 4), ("no", 3), ("bed", 7), *((("learn", 1),) if v2_word else ()))
    for w, (word, n) in enumerate(words):
        for i in range(n):  # distinct levels: identical bytes would be moved together as duplicates
            write_wav(root / word / f"spk{i:05d}_nohash_0.wav", np.full(16_000, 0.01 * (10 * w + i + 1)))
    write_wav(root / "_background_noise_" / "hum.wav", np.full(48_000, 0.01))
    (root / "validation_list.txt").write_text("yes/spk00003_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("")
    return root


def test_rebalancing_with_chosen_keywords(tmp_path, write_wav):
    root = _tiny_archive(tmp_path / "sc", write_wav)
    index = load_dataset(DatasetSpec.create("speech_commands", root, keywords="yes,no"))
    counts = Counter((c.split, c.label) for c in index.clips)
    # train: yes 3 + no 3 -> mean 3, so 3 of the 7 bed clips stay unknown and 3 silence crops are cut;
    # validation: yes 1 + no 0 -> mean 0 (rounded down): no unknown, no silence.
    assert counts["train", UNKNOWN] == 3 and counts["train", SILENCE] == 3
    assert counts["validation", "yes"] == 1 and counts["validation", SILENCE] == 0
    offsets = sorted(c.offset for c in index.clips if c.label == SILENCE)
    assert offsets[-1] + 16_000 <= int(0.8 * 48_000)


def test_v2_word_with_version_v1_is_refused(tmp_path, write_wav):
    root = _tiny_archive(tmp_path / "sc", write_wav, v2_word=True)
    assert load_dataset(DatasetSpec.create("speech_commands", root, protocol="35")).version == "v2"
    with pytest.raises(DataError, match="learn"):
        load_dataset(DatasetSpec.create("speech_commands", root, version="v1"))


def test_missing_folder_names_the_archive(tmp_path):
    with pytest.raises(DataError, match="speech_commands_v0.02.tar.gz from download.tensorflow.org/data/"):
        load_dataset(DatasetSpec.create("speech_commands", tmp_path / "nothing"))


def test_missing_lists_and_noise_are_named(tmp_path, write_wav):
    root = _tiny_archive(tmp_path / "sc", write_wav)
    (root / "testing_list.txt").unlink()
    with pytest.raises(DataError, match="testing_list.txt"):
        load_dataset(DatasetSpec.create("speech_commands", root))
    (root / "_background_noise_" / "hum.wav").unlink()
    with pytest.raises(DataError, match="--noise-dir"):
        load_dataset(DatasetSpec.create("speech_commands", root, protocol="mini"))


def test_unknown_protocol_is_a_config_error(sample):
    with pytest.raises(ConfigError, match="--protocol official"):
        load_dataset(DatasetSpec.create("speech_commands", sample, protocol="official"))
