"""Free Spoken Digit Dataset: the documented take split, our validation takes, a speaker-disjoint mini split."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from kwsbench.data.datasets import load_dataset
from kwsbench.data.records import SPLITS
from kwsbench.errors import DataError
from kwsbench.specs import DatasetSpec


@pytest.fixture(scope="module")
def fsdd(shared_data):
    return shared_data / "fsdd"


def test_official_split_by_take(fsdd):
    index = load_dataset(DatasetSpec.create("fsdd", fsdd))
    assert index.classes == [str(d) for d in range(10)] and len(index.clips) == 3_000
    # 6 speakers x 10 digits x 5 takes = 300 clips per held-out range of takes.
    assert Counter(c.split for c in index.clips) == {"train": 2_400, "validation": 300, "test": 300}
    for clip in index.clips:
        take = int(re.match(r"\d_\w+?_(\d+)\.wav", clip.path.name)[1])
        assert clip.split == ("test" if take < 5 else "validation" if take < 10 else "train")
        assert clip.label == clip.path.name[0]
    assert any("takes 5-9 validation" in n for n in index.notes)


def test_mini_is_speaker_disjoint(fsdd):
    index = load_dataset(DatasetSpec.create("fsdd", fsdd, protocol="mini"))
    speakers = {s: {c.speaker for c in index.clips if c.split == s} for s in SPLITS}
    assert sum(len(v) for v in speakers.values()) == 6  # each of the 6 speakers in exactly one split
    assert len(index.clips) == 3_000


def test_given_recordings_folder_directly(fsdd):
    assert len(load_dataset(DatasetSpec.create("fsdd", fsdd / "recordings")).clips) == 3_000


def test_foreign_name_is_refused(tmp_path, write_wav):
    write_wav(tmp_path / "recordings" / "hello.wav", [0.1] * 800, sample_rate=8_000)
    with pytest.raises(DataError, match=r"hello\.wav: not an FSDD name"):
        load_dataset(DatasetSpec.create("fsdd", tmp_path))
