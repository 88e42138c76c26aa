"""Batches from the clip cache: shapes, coverage, seeded determinism and augmentation that really acts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from kwsbench.data.augment import SpecAugment
from kwsbench.data.cache import ClipCache, as_float32, prepare
from kwsbench.data.features import LogMel
from kwsbench.data.loader import iterate_batches, make_augmentation, num_batches
from kwsbench.errors import ConfigError, DataError
from kwsbench.specs import DatasetSpec


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> ClipCache:
    """The v0.01 sample under the 12-class protocol: 12 clips per split (3 silence each), 6 noise files."""
    root = tmp_path_factory.mktemp("cache")
    sample = shared_data / "speech_commands_v0.01_sample"
    spec = DatasetSpec.create("speech_commands", sample, protocol="12")
    result = prepare(spec, cache_dir=root, workers=1, progress=False)
    return ClipCache.open(result.path)


@pytest.fixture(scope="module")
def frontend() -> LogMel:
    return LogMel(n_mels=40)


def _collect(batches) -> tuple[torch.Tensor, torch.Tensor]:
    feats, labels = zip(*batches, strict=True)
    return torch.cat(feats), torch.cat(labels)


def test_shapes_and_counts(cache: ClipCache, frontend: LogMel) -> None:
    batches = list(iterate_batches(cache, "train", 5, frontend=frontend, seed=0))
    assert [len(b[1]) for b in batches] == [5, 5, 2] and num_batches(cache, "train", 5) == 3
    features, labels = batches[0]
    assert (
        features.shape == (5, 1, 40, 101) and features.dtype == torch.float32 and labels.dtype == torch.int64
    )
    dropped = list(iterate_batches(cache, "train", 5, frontend=frontend, drop_last=True))
    assert len(dropped) == 2 == num_batches(cache, "train", 5, drop_last=True)


def test_plain_features_are_the_frontend_of_the_cached_clips(cache: ClipCache, frontend: LogMel) -> None:
    features, labels = _collect(iterate_batches(cache, "validation", 4, frontend=frontend, shuffle=False))
    waves, want_labels = cache.split("validation")
    # The same batches of 4 in cache order through the same frontend: bit-identical, on any CPU.
    clips = torch.from_numpy(as_float32(np.asarray(waves)))
    expected = torch.cat([frontend(clips[i : i + 4]) for i in range(0, len(clips), 4)])
    assert torch.equal(features, expected)
    assert labels.tolist() == want_labels.tolist()


def test_shuffle_visits_every_clip_once_in_a_seeded_order(cache: ClipCache, frontend: LogMel) -> None:
    plain, plain_labels = _collect(iterate_batches(cache, "train", 4, frontend=frontend, shuffle=False))
    feats_a, a = _collect(iterate_batches(cache, "train", 4, frontend=frontend, seed=3))
    feats_b, b = _collect(iterate_batches(cache, "train", 4, frontend=frontend, seed=3))
    feats_c, _ = _collect(iterate_batches(cache, "train", 4, frontend=frontend, seed=4))
    assert torch.equal(a, b) and torch.equal(feats_a, feats_b)
    assert not torch.equal(feats_a, plain) and not torch.equal(feats_a, feats_c)
    assert Counter(a.tolist()) == Counter(plain_labels.tolist())
    # Each clip exactly once: the same multiset of per-clip feature sums. Other batch mates change only float32
    # rounding (~1e-6 of a sum); two different clips' sums differ by far more than 1e-4 of it.
    torch.testing.assert_close(
        feats_a.sum((1, 2, 3)).sort().values, plain.sum((1, 2, 3)).sort().values, rtol=1e-4, atol=0
    )


def test_augmentation_is_seeded_and_changes_features(cache: ClipCache, frontend: LogMel) -> None:
    augment = make_augmentation(
        cache, frontend, spec_augment=SpecAugment(freq_mask_param=5, time_mask_param=20)
    )
    run = lambda seed: _collect(  # noqa: E731
        iterate_batches(cache, "train", 6, frontend=frontend, augment=augment, shuffle=False, seed=seed)
    )
    plain, _ = _collect(iterate_batches(cache, "train", 6, frontend=frontend, shuffle=False))
    first, labels = run(0)
    again, _ = run(0)
    other, _ = run(1)
    assert torch.equal(first, again) and not torch.equal(first, other)
    changed = (first != plain).flatten(1).any(dim=1)
    # Noise p=0.8 plus SpecAugment on every clip: no clip may come back untouched.
    assert changed.all()
    assert (first == 0).any()  # SpecAugment's masks (log-mel of real audio is never exactly 0 otherwise)
    assert not (plain == 0).any()


def test_silence_clips_always_get_noise(cache: ClipCache, frontend: LogMel) -> None:
    augment = make_augmentation(cache, frontend, time_shift=0, noise_probability=1e-9)
    silence = cache.classes.index("_silence_")
    plain, labels = _collect(iterate_batches(cache, "train", 12, frontend=frontend, shuffle=False))
    mixed, _ = _collect(
        iterate_batches(cache, "train", 12, frontend=frontend, augment=augment, shuffle=False)
    )
    changed = (mixed != plain).flatten(1).any(dim=1)
    assert changed[labels == silence].all() and not changed[labels != silence].any()


def test_augment_must_share_the_frontend(cache: ClipCache, frontend: LogMel) -> None:
    augment = make_augmentation(cache, LogMel(n_mels=40))
    with pytest.raises(ConfigError, match="frontend"):
        next(iterate_batches(cache, "train", 4, frontend=frontend, augment=augment))


def test_cache_without_noise_cannot_mix(tmp_path: Path, write_wav, frontend: LogMel) -> None:
    # A folder dataset without _background_noise_/: nothing to mix in.
    root = tmp_path / "words"
    for label in ("ja", "nein"):
        for speaker in ("aa", "bb", "cc", "dd"):
            write_wav(root / label / f"{speaker}_nohash_0.wav", np.zeros(16_000, dtype=np.float32))
    result = prepare(
        DatasetSpec.create("folder", root), cache_dir=tmp_path / "cache", workers=1, progress=False
    )
    cache = ClipCache.open(result.path)
    assert make_augmentation(cache, frontend, noise_probability=0).noise is None
    with pytest.raises(DataError, match="no background noise"):
        make_augmentation(cache, frontend)


@pytest.mark.parametrize("size", [0, -3])
def test_batch_size_below_one_is_a_config_error(cache: ClipCache, frontend: LogMel, size: int) -> None:
    with pytest.raises(ConfigError, match=f"batch_size={size} must be >= 1"):
        num_batches(cache, "train", size)
    with pytest.raises(ConfigError, match=f"batch_size={size} must be >= 1"):
        next(iterate_batches(cache, "train", size, frontend=frontend))
