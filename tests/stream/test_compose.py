"""Synthetic streams from real held-out clips: placement, levels, cross-fades and rendering by blocks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kwsbench.data.cache import as_float32
from kwsbench.errors import ConfigError
from kwsbench.stream.compose import build_synthetic_stream

EPS32 = float(np.finfo(np.float32).eps)


def _word_rows(cache) -> set[int]:
    _, labels = cache.split("test")
    silence = cache.classes.index("_silence_")
    return {r for r in range(len(labels)) if labels[r] != silence}


def test_clips_are_placed_apart_each_once_before_any_repeat(word_cache):
    words = _word_rows(word_cache)
    stream = build_synthetic_stream(word_cache, hours=0.4, snr_db=10, seed=3)  # 144 slots of 10 s
    width = word_cache.clip_samples
    assert len(stream.starts) == 144 == len(stream.truth)
    gaps = stream.starts[1:] - (stream.starts[:-1] + width)
    assert gaps.min() >= 2 * 16_000  # the minimum gap, 2 s
    assert (stream.starts // (10 * 16_000) == np.arange(144)).all()  # one clip per 10 s slot
    first_pass = stream.rows[: len(words)]
    assert set(first_pass.tolist()) == words  # every word clip once (silence left out) ...
    assert len(set(stream.rows[len(words) :].tolist())) == 144 - len(words)  # ... before any repeats
    _, labels = word_cache.split("test")
    assert [o.keyword for o in stream.truth] == [word_cache.classes[labels[r]] for r in stream.rows]
    assert [o.start_s for o in stream.truth] == (stream.starts / 16_000).tolist()
    assert all(o.end_s - o.start_s == 1.0 for o in stream.truth)


def test_the_same_seed_gives_the_same_stream(word_cache):
    a, b = (build_synthetic_stream(word_cache, hours=0.01, snr_db=10, seed=1) for _ in range(2))
    c = build_synthetic_stream(word_cache, hours=0.01, snr_db=10, seed=2)
    assert np.array_equal(a.render(0, a.total_samples), b.render(0, b.total_samples))
    assert not np.array_equal(a.starts, c.starts)


def test_every_clip_sits_at_the_stated_snr(word_cache):
    snr_db = 12.5
    stream = build_synthetic_stream(word_cache, hours=0.02, snr_db=snr_db, seed=0)
    speech, noise = stream.settings["speech_rms"], stream.settings["noise_rms"]
    assert 20 * np.log10(speech / noise) == pytest.approx(snr_db, abs=1e-9)
    for scaled in stream.noise:  # every noise file at the noise level
        assert np.sqrt(np.mean(np.square(scaled, dtype=np.float64))) == pytest.approx(noise, rel=1e-6)
    background = dataclasses.replace(
        stream, starts=stream.starts[:0], rows=stream.rows[:0], gains=stream.gains[:0]
    )
    width = word_cache.clip_samples
    for start, row, gain in zip(stream.starts[:3], stream.rows[:3], stream.gains[:3], strict=True):
        mix = stream.render(int(start), int(start) + width)
        clip = mix - background.render(int(start), int(start) + width)
        # Each mixed sample is rounded once to float32 (eps/2 of its size), and so is the subtraction.
        bound = EPS32 * float(np.abs(mix).max())
        assert (
            np.abs(clip - gain * as_float32(np.asarray(stream.clips[row]))).max() <= bound
        )  # in place, unshifted
        assert abs(np.sqrt(np.mean(np.square(clip, dtype=np.float64))) - speech) <= bound


def test_rendering_by_blocks_equals_the_whole(word_cache):
    stream = build_synthetic_stream(word_cache, hours=0.01, snr_db=10, seed=0)
    whole = stream.render(0, stream.total_samples)
    assert len(whole) == 576_000
    edges = [0, 1, 17_777, 160_000, 160_001, 333_333, 576_000]
    assert np.array_equal(
        np.concatenate([stream.render(a, b) for a, b in zip(edges, edges[1:], strict=False)]), whole
    )
    assert np.array_equal(np.concatenate(list(stream.chunks(seconds=7.3))), whole)


def test_noise_segments_cross_fade_without_a_gap_or_a_bump(word_cache):
    stream = build_synthetic_stream(word_cache, hours=0.02, snr_db=10, seed=0)
    length = stream.segment_samples + stream.fade_samples
    flat = dataclasses.replace(
        stream,
        noise=[np.ones(length, dtype=np.float32)],
        segment_files=np.zeros_like(stream.segment_files),
        segment_offsets=np.zeros_like(stream.segment_offsets),
        starts=stream.starts[:0],
        rows=stream.rows[:0],
        gains=stream.gains[:0],
    )
    # A constant "noise" renders constant: the fades of neighbouring segments add up to 1 (to float32 rounding).
    assert np.abs(flat.render(0, flat.total_samples) - 1.0).max() <= 2 * EPS32


def test_bad_stream_settings_are_one_line(word_cache):
    with pytest.raises(ConfigError, match="--hours 0"):
        build_synthetic_stream(word_cache, hours=0, snr_db=10, seed=0)
    with pytest.raises(ConfigError, match="spacing 2.5 s leaves no room"):
        build_synthetic_stream(word_cache, hours=0.1, snr_db=10, seed=0, spacing_s=2.5)
