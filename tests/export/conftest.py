"""Export fixtures: a small keyword folder of real Speech Commands clips (symlinked, never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest
from audio_folders import link_words

from kwsbench.specs import DatasetSpec

WORDS = ("yes", "no", "up", "down")
CLIPS_PER_WORD = 30


@pytest.fixture(scope="session")
def four_words(shared_data: Path, tmp_path_factory) -> DatasetSpec:
    """``folder`` layout, mini protocol: 4 words x 30 clips of the official test set."""
    root = link_words(shared_data, tmp_path_factory.mktemp("four_words"), WORDS, CLIPS_PER_WORD)
    return DatasetSpec.create("folder", root, protocol="mini", fractions=(0.6, 0.2, 0.2))
