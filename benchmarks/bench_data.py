"""Data-pipeline speed: cache build time and clips/s of log-mel batches read from the cache.

Run: ``.venv/bin/python -m pytest benchmarks/bench_data.py --benchmark-only``. The reading benchmarks use
the official v0.02 test-set clips (3,965 here) as one split, with the v0.01 sample's six noise files as
the noise bank; one round is one pass in batches of 100 through ``iterate_batches`` (gather from the
memory map, int16 -> float, augmentation, ``LogMel``). The page cache is warm after the build, so this is
the CPU cost of the pipeline, not disk speed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from kwsbench.data.augment import specaugment_for_tau
from kwsbench.data.cache import ClipCache, build_cache
from kwsbench.data.datasets import load_dataset
from kwsbench.data.features import LogMel
from kwsbench.data.loader import iterate_batches, make_augmentation
from kwsbench.data.records import DatasetIndex
from kwsbench.settings import shared_data_dir
from kwsbench.specs import DatasetSpec

BATCH = 100
WORKERS = 2


def _sample_index() -> DatasetIndex:
    """The v0.01 sample under the 12-class protocol (keywords, subsampled unknown, silence, 6 noise files)."""
    return load_dataset(
        DatasetSpec.create(
            "speech_commands", shared_data_dir() / "speech_commands_v0.01_sample", protocol="12"
        )
    )


def _test_set_index() -> DatasetIndex:
    """The v0.02 test set with the sample's noise files attached (the test-set archive has none)."""
    index = load_dataset(
        DatasetSpec.create("speech_commands_test_set", shared_data_dir() / "speech_commands_test_set_v0.02")
    )
    return dataclasses.replace(index, noise_files=_sample_index().noise_files)


@pytest.fixture(scope="module")
def test_set_cache(tmp_path_factory: pytest.TempPathFactory) -> ClipCache:
    return build_cache(_test_set_index(), tmp_path_factory.mktemp("cache"), workers=WORKERS, progress=False)


@pytest.mark.parametrize("which", ["v0.01_sample", "test_set_v0.02"])
def test_cache_build(benchmark, tmp_path: Path, which: str) -> None:
    """Seconds to decode and write a whole cache with 2 worker processes (pool start-up included)."""
    index = _sample_index() if which == "v0.01_sample" else _test_set_index()
    rounds = iter(range(1_000))

    def build() -> ClipCache:
        return build_cache(index, tmp_path / f"round{next(rounds)}", workers=WORKERS, progress=False)

    cache = benchmark.pedantic(build, rounds=2, iterations=1)
    assert not cache.hit
    benchmark.extra_info.update(clips=len(index.clips), noise_files=len(index.noise_files))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("augmented", [False, True], ids=["plain", "augmented"])
def test_read_batches(benchmark, test_set_cache: ClipCache, threads: int, augmented: bool) -> None:
    """One pass of log-mel batches of 100; augmented = shift +-100 ms, noise p=0.8, SpecAugment (tau=3)."""
    frontend = LogMel(n_mels=40)
    augment = (
        make_augmentation(test_set_cache, frontend, spec_augment=specaugment_for_tau(3))
        if augmented
        else None
    )
    clips = test_set_cache.counts()["test"]

    def one_pass() -> int:
        seen = 0
        for features, _ in iterate_batches(test_set_cache, "test", BATCH, frontend=frontend, augment=augment):
            seen += features.shape[0]
        return seen

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert benchmark.pedantic(one_pass, rounds=3, iterations=1, warmup_rounds=1) == clips
    finally:
        torch.set_num_threads(previous)
    benchmark.extra_info.update(clips=clips, clips_per_s=round(clips / benchmark.stats.stats.mean))
