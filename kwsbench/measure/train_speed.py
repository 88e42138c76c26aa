"""Training throughput on CPU: the straightforward ("eager") and the reformulated ("fast") model side by side.

Protocol ``kwsbench-train-speed/1``:

1. **Model**: ``create_model(name)`` built after ``torch.manual_seed(seed)``, in training mode; the fast
   formulation is ``kwsbench.models.reformulate.for_training`` of it (same function, same parameters).
2. **Input**: one batch drawn once from a standard normal (``torch.Generator().manual_seed(seed)``) at the
   declared shape ``(batch, 1, n_features, frames)`` (a stand-in for log-mel features) with uniform random
   labels over the 12 classes; data loading is not timed.
3. **What is timed**: one training step: ``zero_grad(set_to_none=True)``, forward, cross-entropy loss,
   backward, and an SGD step with the paper's recipe (lr 0.1, momentum 0.9, weight decay 1e-3),
   ``time.perf_counter_ns`` around the whole step.
4. **Warm-up and repetitions**: ``warmup`` untimed steps, then ``steps`` timed ones. When both formulations
   are measured they alternate step by step, so load from other processes hits both alike.
5. **Threads**: ``torch.set_num_threads(threads)`` for the measurement, restored after.
6. **Reported**: median and 90th percentile step time (ms) and ``samples_per_s = batch / median``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kwsbench.errors import ConfigError
from kwsbench.measure.protocol import TRAIN_DEFAULTS
from kwsbench.models import create_model, model_info
from kwsbench.models.reformulate import for_training
from kwsbench.results.schema import TrainSpeedRecord

PROTOCOL_VERSION = "kwsbench-train-speed/1"
PROTOCOL = (
    "one training step timed: zero_grad + forward + cross-entropy + backward + SGD step "
    "(lr 0.1, momentum 0.9, weight decay 1e-3); input standard normal at the declared shape, "
    "random labels; warm-up steps untimed"
)
NUM_CLASSES = 12


def _check(batch: int, threads: int, steps: int, warmup: int) -> None:
    for label, value, least in (("batch", batch, 1), ("threads", threads, 1), ("steps", steps, 1)):
        if value < least:
            raise ConfigError(f"{label} must be at least {least}, got {value}")
    if warmup < 0:
        raise ConfigError(f"warmup must be 0 or more, got {warmup}")


def training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """A closure running one SGD training step of ``model`` on ``(x, y)``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def training_inputs(name: str, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The timed batch: standard-normal features ``(batch, 1, n_features, frames)`` and labels ``(batch,)``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(model_info(name).input.shape(batch), generator=generator)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=generator)
    return x, y


def _record(
    name: str, batch: int, threads: int, fast: bool, times_ns: list[int], warmup: int
) -> TrainSpeedRecord:
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    median = float(np.median(ms))
    return TrainSpeedRecord(
        name=name,
        formulation="fast" if fast else "eager",
        batch=batch,
        threads=threads,
        samples_per_s=round(batch / (median / 1e3), 1),
        step_ms_median=round(median, 3),
        step_ms_p90=round(float(np.percentile(ms, 90)), 3),
        steps=len(times_ns),
        warmup=warmup,
        protocol=PROTOCOL,
        protocol_version=PROTOCOL_VERSION,
    )


def _time_steps(
    name: str, formulations: tuple[bool, ...], batch: int, threads: int, steps: int, warmup: int, seed: int
) -> dict[bool, list[int]]:
    """Step times (ns) for each formulation (``True`` = fast), alternating step by step."""
    x, y = training_inputs(name, batch, seed)
    runs: dict[bool, Callable[[], None]] = {}
    for fast in formulations:
        torch.manual_seed(seed)
        model = create_model(name, num_classes=NUM_CLASSES).train()
        runs[fast] = training_step(for_training(model) if fast else model, x, y)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(warmup):
            for step in runs.values():
                step()
        times: dict[bool, list[int]] = {fast: [] for fast in formulations}
        for _ in range(steps):
            for fast, step in runs.items():
                start = time.perf_counter_ns()
                step()
                times[fast].append(time.perf_counter_ns() - start)
    finally:
        torch.set_num_threads(previous)
    return times


def measure_training_throughput(
    name: str,
    *,
    batch: int = TRAIN_DEFAULTS["batch"],
    threads: int = TRAIN_DEFAULTS["threads"],
    steps: int = TRAIN_DEFAULTS["steps"],
    warmup: int = TRAIN_DEFAULTS["warmup"],
    fast: bool = True,
    seed: int = 0,
) -> TrainSpeedRecord:
    """Training steps per second of one formulation of model ``name`` (protocol in the module docstring).

    Returns a ``TrainSpeedRecord`` (``samples_per_s = batch / median step time``).
    """
    _check(batch, threads, steps, warmup)
    times = _time_steps(name, (fast,), batch, threads, steps, warmup, seed)
    return _record(name, batch, threads, fast, times[fast], warmup)


def compare_training_throughput(
    name: str,
    *,
    batch: int = TRAIN_DEFAULTS["batch"],
    threads: int = TRAIN_DEFAULTS["threads"],
    steps: int = TRAIN_DEFAULTS["steps"],
    warmup: int = TRAIN_DEFAULTS["warmup"],
    seed: int = 0,
) -> dict:
    """Eager and fast formulations of ``name`` measured in one run, steps alternating.

    Returns ``{"eager": record, "fast": record, "speedup": fast samples/s over eager samples/s}``.
    """
    _check(batch, threads, steps, warmup)
    times = _time_steps(name, (False, True), batch, threads, steps, warmup, seed)
    eager = _record(name, batch, threads, False, times[False], warmup)
    fast = _record(name, batch, threads, True, times[True], warmup)
    return {"eager": eager, "fast": fast, "speedup": round(fast.samples_per_s / eager.samples_per_s, 3)}
