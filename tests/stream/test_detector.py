"""The detector's pieces on hand-made numbers: ring buffer, smoothing, firing rule, hop times, settings, and the
same detections hop by hop as on the whole score matrix."""

from __future__ import annotations

import numpy as np
import pytest

from kwsbench.errors import ConfigError
from kwsbench.stream.detector import (
    DetectorSettings,
    MovingAverage,
    RingBuffer,
    StreamingDetector,
    fire,
    keyword_columns,
    posteriors,
    score_stream,
    smoothed_best,
)


def test_ring_buffer_holds_the_last_samples_in_order():
    rng = np.random.default_rng(0)
    ring = RingBuffer(10)
    seen = np.zeros(10, dtype=np.float32)  # the buffer starts silent
    for size in [3, 7, 1, 15, 0, 4, 10, 9, 2]:
        samples = rng.standard_normal(size).astype(np.float32)
        ring.write(samples)
        seen = np.concatenate([seen, samples])
        assert np.array_equal(ring.window(), seen[-10:])
    assert ring.window().flags["C_CONTIGUOUS"]


def test_moving_average_by_hand_and_blockwise_identical():
    rows = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 3.0], [4.0, 6.0]])
    # The first rows average what exists: 1, (1+2)/2, (1+2+3)/3, (2+3+4)/3.
    expected = np.array([[1.0, 0.0], [1.5, 0.0], [2.0, 1.0], [3.0, 3.0]])
    assert np.array_equal(MovingAverage(3, 2)(rows), expected)
    rng = np.random.default_rng(1)
    data = rng.random((50, 4))
    whole = MovingAverage(5, 4)(data)
    smoother = MovingAverage(5, 4)
    pieces = np.concatenate([smoother(data[a:b]) for a, b in [(0, 1), (1, 2), (2, 9), (9, 10), (10, 50)]])
    assert np.array_equal(whole, pieces)  # the same additions in the same order: bit-identical
    assert np.array_equal(MovingAverage(1, 4)(data), data)


def test_firing_rule_by_hand():
    scores = np.array([0.2, 0.8, 0.9, 0.1, 0.95, 0.99, 0.8, 0.7, 0.76])
    # threshold 0.75, refractory 3 hops: 1 fires; 2 is within 3 of it; 4 fires; 5, 6 within; 7 below; 8 fires.
    assert fire(scores, 0.75, 3) == [1, 4, 8]
    assert fire(scores, 0.75, 0) == [1, 2, 4, 5, 6, 8]  # no refractory: every hop at or above the threshold
    assert fire(scores, 0.99, 3) == [5]  # at the threshold fires
    assert fire(scores, 0.995, 3) == []
    # The same rule hop by hop, carrying the last firing between calls.
    last, online = None, []
    for hop, score in enumerate(scores):
        fired = fire(np.array([score]), 0.75, 3, first_hop=hop, last_fired=last)
        online += fired
        last = fired[-1] if fired else last
    assert online == [1, 4, 8]


def test_posteriors_and_keyword_columns():
    logits = np.array([[0.0, np.log(3.0), 1000.0], [1.0, 1.0, 1.0]], dtype=np.float32)
    p = posteriors(logits)
    assert np.allclose(p[1], 1 / 3) and p[0, 2] == 1.0  # no overflow at a logit of 1000
    assert keyword_columns(["yes", "_unknown_", "no", "_silence_"]).tolist() == [0, 2]
    with pytest.raises(ConfigError, match="no keyword"):
        keyword_columns(["_unknown_", "_silence_"])


def test_settings_derive_hops_and_times():
    s = DetectorSettings(hop_ms=100, smooth_ms=300, refractory_ms=1000)
    assert (s.hop_samples, s.smooth_hops, s.refractory_hops) == (1600, 3, 10)
    assert s.hop_time(0) == 0.1 and s.hop_time(np.array([9]))[0] == 1.0  # the end of each hop's window
    assert DetectorSettings(smooth_ms=0).smooth_hops == 1
    for bad, option in [
        (dict(hop_ms=0), "--hop-ms"),
        (dict(hop_ms=1500), "--hop-ms"),
        (dict(smooth_ms=-1), "--smooth-ms"),
        (dict(threshold=1.5), "--threshold"),
        (dict(refractory_ms=float("nan")), "--refractory-ms"),
    ]:
        with pytest.raises(ConfigError, match=option):
            DetectorSettings(**bad)


class _EnergyScorer:
    """A stand-in scorer whose logits are a fixed function of the window: keyword "yes" rises with the
    energy of the window's last 0.2 s, "no" with its first 0.2 s. Exact, cheap, batch-independent."""

    labels = ["yes", "no", "_unknown_", "_silence_"]
    sample_rate = 16_000
    window_samples = 16_000
    name, source, note = "energy", "test", "numpy"

    def score(self, windows: np.ndarray) -> np.ndarray:
        head = np.mean(windows[:, :3200] ** 2, axis=1)
        tail = np.mean(windows[:, -3200:] ** 2, axis=1)
        return np.stack([40 * tail, 40 * head, np.zeros_like(head), np.full_like(head, 2.0)], axis=1)


def test_hop_by_hop_equals_the_whole_stream_in_batches():
    rng = np.random.default_rng(2)
    stream = (rng.standard_normal(16_000 * 12) * 0.05).astype(np.float32)
    for start in (20_000, 70_000, 130_000):
        stream[start : start + 4_000] += rng.standard_normal(4_000).astype(np.float32)
    scorer, settings = _EnergyScorer(), DetectorSettings(threshold=0.6)
    live = StreamingDetector(scorer, settings)
    detections = []
    for begin in range(0, len(stream), 2_500):  # chunks that do not line up with hops
        detections += live.push(stream[begin : begin + 2_500])
    assert live.hops == len(stream) // settings.hop_samples == 120
    logits = score_stream([stream[:50_000], stream[50_000:]], scorer, settings, batch=7, progress=False)
    assert logits.shape == (120, 4)
    score, column = smoothed_best(logits, keyword_columns(scorer.labels), MovingAverage(3, 4))
    hops = fire(score, 0.6, settings.refractory_hops)
    assert [(d.time_s, d.keyword, d.score) for d in detections] == [
        (float(settings.hop_time(h)), scorer.labels[column[h]], float(score[h])) for h in hops
    ]
    # Each burst is heard once as "yes" (entering the window's tail) and later as "no" (leaving by its head).
    assert [d.keyword for d in detections] == ["yes", "no"] * 3
