"""Export fixtures: a small keyword folder of real Speech Commands clips (symlinked, never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwsbench.specs import DatasetSpec

WORDS = ("yes", "no", "up", "down")
CLIPS_PER_WORD = 30


@pytest.fixture(scope="session")
def four_words(shared_data: Path, tmp_path_factory) -> DatasetSpec:
    """``folder`` layout, mini protocol: 4 words x 30 clips of the official test set."""
    root = tmp_path_factory.mktemp("four_words")
    source = shared_data / "speech_commands_test_set_v0.02"
    for word in WORDS:
        (root / word).mkdir()
        for path in sorted((source / word).glob("*.wav"))[:CLIPS_PER_WORD]:
            (root / word / path.name).symlink_to(path)
    return DatasetSpec.create("folder", root, protocol="mini", fractions=(0.6, 0.2, 0.2))
