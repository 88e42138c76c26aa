"""Latency of one callable under the protocol of :mod:`kwsbench.measure.protocol`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from kwsbench.measure.protocol import Protocol


@dataclass(frozen=True)
class LatencyResult:
    """Per-call wall time statistics in milliseconds over ``n`` timed calls, with the protocol used."""

    median_ms: float
    p90_ms: float
    iqr_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    n: int
    protocol: Protocol

    def to_dict(self) -> dict:
        d = asdict(self)
        d["protocol"] = self.protocol.to_dict()
        return d


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run a block with ``threads`` intra-op torch threads, restoring the previous setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def summarize_ns(samples_ns: list[int] | np.ndarray, protocol: Protocol) -> LatencyResult:
    """Statistics of per-call durations (nanoseconds) as a :class:`LatencyResult` in milliseconds."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    q25, q50, q75, q90 = np.percentile(ms, [25, 50, 75, 90])
    return LatencyResult(
        median_ms=float(q50),
        p90_ms=float(q90),
        iqr_ms=float(q75 - q25),
        mean_ms=float(ms.mean()),
        min_ms=float(ms.min()),
        max_ms=float(ms.max()),
        n=int(ms.size),
        protocol=protocol,
    )


def measure_latency(
    fn: Callable[..., Any],
    inputs: Any = (),
    *,
    threads: int = 1,
    warmup: int | None = None,
    iterations: int | None = None,
    min_time_s: float | None = None,
    protocol: Protocol | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> LatencyResult:
    """Time ``fn(*inputs)`` (a tuple) or ``fn(inputs)`` (anything else) per call.

    ``warmup`` untimed calls, then at least ``iterations`` timed ones until ``min_time_s`` has passed
    (capped at the protocol's ``max_iterations``). ``protocol`` supplies defaults and the fields recorded
    (what is timed, batch); explicit arguments override it. torch runs with ``threads`` intra-op threads
    and the previous count is restored. ``clock`` returns nanoseconds (tests inject a fake one).
    """
    base = protocol or Protocol()
    proto = replace(
        base,
        threads=threads,
        warmup=base.warmup if warmup is None else warmup,
        iterations=base.iterations if iterations is None else iterations,
        min_time_s=base.min_time_s if min_time_s is None else min_time_s,
    )
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    samples: list[int] = []
    with torch_threads(threads), torch.inference_mode():
        for _ in range(proto.warmup):
            fn(*args)
        spent = 0
        min_ns = proto.min_time_s * 1e9
        while len(samples) < proto.max_iterations and (len(samples) < proto.iterations or spent < min_ns):
            start = clock()
            fn(*args)
            samples.append(clock() - start)
            spent += samples[-1]
    return summarize_ns(samples, proto)
