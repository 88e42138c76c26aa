"""Fixtures of the streaming tests: real clips, a keyword model trained briefly on them, and streams made of them.

The model is BC-ResNet-1 trained for 10 epochs on "yes", "no" and `_unknown_` words of the official test
set (symlinked, never copied; speaker-disjoint mini split) with the v0.01 sample's background noise. Training
costs from half a minute (an idle 2-core machine) to several (a busy one), so the folder of links and the
trained model are kept in the cache folder (``KWSBENCH_CACHE``), keyed by the data's location and the trial's
configuration, and trained under a lock: later sessions reuse them. Delete ``$KWSBENCH_CACHE/tests`` to retrain.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

WORDS = ("yes", "no")
NOISE = "speech_commands_v0.01_sample/_background_noise_"


def _tests_folder() -> Path:
    from kwsbench.settings import cache_dir

    folder = cache_dir() / "tests"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def word_spec(shared_data: Path):
    """``folder`` dataset: every clip of "yes", "no" and `_unknown_` in the official test set, plus noise."""
    from kwsbench.specs import DatasetSpec

    source = shared_data / "speech_commands_test_set_v0.02"
    tag = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:10]
    root = _tests_folder() / f"stream-words-{tag}"
    if not root.is_dir():
        # Built beside, then renamed into place: a concurrent session's twin or an interrupted build is harmless.
        building = Path(tempfile.mkdtemp(prefix=".building-", dir=root.parent))
        for word in (*WORDS, "_unknown_"):
            (building / word).mkdir()
            for path in sorted((source / word).glob("*.wav")):
                (building / word / path.name).symlink_to(path)
        try:
            os.rename(building, root)
        except OSError:  # the twin won
            import shutil

            shutil.rmtree(building)
    return DatasetSpec.create(
        "folder", root, protocol="mini", keywords=",".join(WORDS), noise_dir=shared_data / NOISE
    )


@pytest.fixture(scope="session")
def word_cache(word_spec):
    from kwsbench.runner.loop import open_cache

    return open_cache(word_spec, progress=False)


def train_word_model(word_spec, options: dict) -> Path:
    """A checkpoint of BC-ResNet-1 with ``options`` after 10 epochs on ``word_spec``, trained once per cache."""
    from kwsbench.results.store import locked
    from kwsbench.runner.config import Recipe, TrialConfig
    from kwsbench.runner.loop import CHECKPOINT_NAME, METRICS_NAME, train_trial

    config = TrialConfig(
        experiment="stream-tests",
        model="bcresnet_1",
        options=dict(options),
        recipe=Recipe(epochs=10, warmup_epochs=1, batch_size=50),
        dataset=word_spec,
        seed=0,
    )
    out = _tests_folder() / f"stream-model-{config.trial_id}"
    with locked(out.with_suffix(".lock")):
        if not ((out / CHECKPOINT_NAME).is_file() and (out / METRICS_NAME).is_file()):
            threads = torch.get_num_threads()
            try:
                train_trial(config, out, threads=2, progress=False)  # resumes an interrupted run
            finally:
                torch.set_num_threads(threads)  # train_trial sets the process-wide count
    return out / CHECKPOINT_NAME


@pytest.fixture(scope="session")
def trained_checkpoint(word_spec, word_cache) -> Path:
    """A checkpoint of BC-ResNet-1 after 10 epochs on ``word_spec`` (labels yes, no, _unknown_, _silence_)."""
    return train_word_model(word_spec, {})


@pytest.fixture(scope="session")
def trained_causal_checkpoint(word_spec, word_cache) -> Path:
    """The same training with ``temporal_padding="causal"``: the model the streaming executor runs."""
    return train_word_model(word_spec, {"temporal_padding": "causal"})


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """An untrained BC-ResNet-1 checkpoint with the same labels: for the paths where the weights do not matter."""
    from kwsbench.models import create_model
    from kwsbench.models.checkpoint import save_checkpoint

    labels = [*WORDS, "_unknown_", "_silence_"]
    torch.manual_seed(0)
    model = create_model("bcresnet_1", num_classes=len(labels))
    path = tmp_path_factory.mktemp("random") / "checkpoint.pt"
    save_checkpoint(path, model, model_name="bcresnet_1", options={}, labels=labels, config={})
    return path


def confident_clips(checkpoint: Path, cache, per_word: int, floor: float = 0.9) -> list[tuple[int, str]]:
    """``(row, word)`` of the first ``per_word`` test clips of each word that the per-clip model gives a
    posterior of at least ``floor`` for its own word, in cache order."""
    from kwsbench.data.cache import as_float32
    from kwsbench.data.features import make_frontend
    from kwsbench.models.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model, spec = model_from_checkpoint(ckpt)
    waves, labels = cache.split("test")
    with torch.inference_mode():
        logits = model(make_frontend(spec)(torch.from_numpy(as_float32(np.asarray(waves)))))
    probs = logits.softmax(dim=1).numpy()
    chosen: list[tuple[int, str]] = []
    for word in WORDS:
        model_column, cache_class = ckpt["labels"].index(word), cache.classes.index(word)
        rows = [r for r in range(len(labels)) if labels[r] == cache_class and probs[r, model_column] >= floor]
        chosen += [(r, word) for r in rows[:per_word]]
    return chosen


def placed_stream(cache, placements: list[tuple[int, str]], *, first_s: float, every_s: float, snr_db: float):
    """A stream with test clip ``row`` number ``i`` of ``placements`` at ``first_s + i * every_s`` over the
    cache's background noise at ``snr_db``, everything else as ``build_synthetic_stream`` makes it."""
    import dataclasses

    from kwsbench.data.cache import as_float32
    from kwsbench.stream.compose import build_synthetic_stream
    from kwsbench.stream.matching import Occurrence

    seconds = first_s + every_s * len(placements) + 1.0
    base = build_synthetic_stream(cache, hours=seconds / 3600, snr_db=snr_db, seed=0)
    rate, width = base.sample_rate, cache.clip_samples
    rows = np.array([row for row, _ in placements], dtype=np.int64)
    starts = np.array([round((first_s + i * every_s) * rate) for i in range(len(placements))], dtype=np.int64)
    levels = np.sqrt(np.mean(np.square(as_float32(np.asarray(base.clips[rows])), dtype=np.float64), axis=1))
    truth = [
        Occurrence(s / rate, (s + width) / rate, word)
        for s, (_, word) in zip(starts, placements, strict=True)
    ]
    return dataclasses.replace(
        base,
        starts=starts,
        rows=rows,
        gains=(base.settings["speech_rms"] / levels).astype(np.float32),
        truth=truth,
    )
