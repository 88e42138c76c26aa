"""measure_latency: statistics checked by hand on a fake clock, thread restore, the protocol recorded."""

from __future__ import annotations

import pytest
import torch

from kwsbench.errors import ConfigError
from kwsbench.measure.latency import measure_latency, summarize_ns
from kwsbench.measure.protocol import PROTOCOL_VERSION, Protocol

MS = 1_000_000


class FakeClock:
    """A nanosecond clock whose k-th timed call lasts ``durations_ms[k]``; it advances on every read."""

    def __init__(self, durations_ms: list[float]):
        self.durations = [int(d * MS) for d in durations_ms]
        self.now = 0
        self.reads = 0

    def __call__(self) -> int:
        if self.reads % 2 == 1:  # the read that ends a timed call
            self.now += self.durations[(self.reads // 2) % len(self.durations)]
        self.reads += 1
        return self.now


def test_statistics_from_a_fake_clock_match_hand_computation():
    calls = []
    clock = FakeClock([7, 1, 10, 3, 5, 2, 9, 4, 8, 6])  # 1..10 ms, shuffled
    r = measure_latency(lambda: calls.append(1), warmup=2, iterations=10, min_time_s=0.0, clock=clock)
    assert len(calls) == 12 and r.n == 10
    # numpy linear percentiles of 1..10: q25 = 3.25, q50 = 5.5, q75 = 7.75, q90 = 9.1. approx's default
    # rel 1e-6 only absorbs the float rounding of the interpolation and the ms conversion (~1e-15).
    assert r.median_ms == pytest.approx(5.5)
    assert r.p90_ms == pytest.approx(9.1)
    assert r.iqr_ms == pytest.approx(4.5)
    assert r.mean_ms == pytest.approx(5.5)
    assert (r.min_ms, r.max_ms) == (pytest.approx(1.0), pytest.approx(10.0))


def test_timing_continues_until_min_time_and_stops_at_the_cap():
    r = measure_latency(lambda: None, warmup=0, iterations=3, min_time_s=0.010, clock=FakeClock([1]))
    assert r.n == 10  # 10 calls of 1 ms reach 10 ms
    capped = Protocol(warmup=0, iterations=3, min_time_s=10.0, max_iterations=7)
    assert measure_latency(lambda: None, protocol=capped, clock=FakeClock([1])).n == 7


def test_inputs_are_passed_and_threads_restored():
    before = torch.get_num_threads()
    seen = []
    r = measure_latency(
        lambda a, b: seen.append((a, b, torch.get_num_threads())), (3, 4), threads=1, warmup=0, iterations=2
    )
    assert seen[0] == (3, 4, 1)
    assert torch.get_num_threads() == before
    assert r.protocol.threads == 1 and r.protocol.version == PROTOCOL_VERSION


def test_real_clock_on_a_tiny_function():
    x = torch.randn(64, 64)
    r = measure_latency(torch.mm, (x, x), warmup=3, iterations=50, min_time_s=0.0)
    assert r.n == 50
    assert 0 < r.min_ms <= r.median_ms <= r.p90_ms <= r.max_ms
    assert r.iqr_ms >= 0
    assert r.to_dict()["protocol"]["iterations"] == 50


def test_summary_of_a_single_sample_and_protocol_validation():
    r = summarize_ns([2 * MS], Protocol())
    assert (r.median_ms, r.p90_ms, r.iqr_ms, r.n) == (2.0, 2.0, 0.0, 1)
    with pytest.raises(ConfigError, match="timed"):
        Protocol(timed="everything")
    for bad in ({"iterations": 0}, {"warmup": -1}, {"threads": 0}, {"batch": 0}):
        with pytest.raises(ConfigError, match=f"{next(iter(bad))} must be at least"):
            Protocol(**bad)
