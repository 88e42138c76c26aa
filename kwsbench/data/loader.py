"""Training and evaluation batches read from a clip cache: shuffled indices, one gather per batch, then
the batched augmentation and frontend on the target device (no per-clip Python work).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from kwsbench.data.augment import Augmentation, NoiseMixer, SpecAugment, TimeShift
from kwsbench.data.cache import PCM_SCALE, ClipCache
from kwsbench.data.records import SILENCE
from kwsbench.errors import ConfigError, DataError

_AUGMENT_SEED_OFFSET = 0x5EED  # the augmentation stream differs from the shuffling stream of the same seed


def make_augmentation(
    cache: ClipCache,
    frontend: nn.Module,
    *,
    time_shift: int = 1600,
    noise_probability: float = 0.8,
    spec_augment: SpecAugment | None = None,
) -> Augmentation:
    """The recipe's training augmentation around ``frontend``, with ``cache``'s noise files as the bank.

    ``time_shift``: max shift in samples (0: none); ``noise_probability``: share of speech clips mixed
    with noise (silence clips always are); ``spec_augment``: e.g. ``specaugment_for_tau(tau)``.
    """
    noise = None
    if noise_probability > 0:
        files = cache.noise()
        if not files:
            raise DataError(
                f"{cache.path}: the cache holds no background noise to mix; "
                "pass --noise-dir or set the noise probability to 0"
            )
        # np.array copies the read-only memory map, which torch cannot wrap without a warning.
        noise = NoiseMixer([torch.from_numpy(np.array(f)) for f in files], probability=noise_probability)
    return Augmentation(
        frontend,
        time_shift=TimeShift(time_shift) if time_shift > 0 else None,
        noise=noise,
        spec_augment=spec_augment,
    )


def iterate_batches(
    cache: ClipCache,
    split: str,
    batch_size: int,
    *,
    frontend: nn.Module,
    augment: Augmentation | None = None,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    device: torch.device | str = "cpu",
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(features (B, 1, n_mels, frames) float32, labels (B,) int64)`` for one pass over ``split``.

    Without ``augment`` the features are ``frontend(waveforms)``; with it, ``augment(waveforms, is_silence,
    generator)``, whose frontend must be ``frontend`` (one frontend only). The order comes from a CPU
    ``torch.Generator`` seeded with ``seed`` and the augmentation from a second one on ``device``: the
    same seed gives the same batches; pass ``seed + epoch`` for a new order each epoch. Within a batch clips
    are in cache order (one sorted read of the memory map). Features are computed without autograd, on
    ``device``, where ``frontend`` and ``augment`` must already be (``.to(device)``).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    if augment is not None and augment.frontend is not frontend:
        raise ConfigError(
            "augment was built around another frontend; build it with make_augmentation(cache, frontend)"
        )
    waves, labels = cache.split(split)
    count = len(labels)
    device = torch.device(device)
    if shuffle:
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).numpy()
    else:
        order = np.arange(count)
    generator = torch.Generator(device=device).manual_seed(seed + _AUGMENT_SEED_OFFSET)
    silence = cache.classes.index(SILENCE) if SILENCE in cache.classes else -1
    labels_t = torch.from_numpy(labels)
    stop = count - count % batch_size if drop_last else count
    for begin in range(0, stop, batch_size):
        index = np.sort(order[begin : begin + batch_size])
        batch = torch.from_numpy(waves[index]).to(device)
        batch = batch.float().div_(PCM_SCALE) if batch.dtype == torch.int16 else batch.float()
        target = labels_t[index].to(device)
        with torch.no_grad():
            if augment is None:
                features = frontend(batch)
            else:
                features = augment(batch, target == silence, generator)
        yield features, target


def num_batches(cache: ClipCache, split: str, batch_size: int, *, drop_last: bool = False) -> int:
    """How many batches ``iterate_batches`` yields for ``split``."""
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    count = len(cache.split(split)[1])
    return count // batch_size if drop_last else -(-count // batch_size)
