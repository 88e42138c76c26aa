"""The latency protocol, written down and versioned apart from the things it measures (as MLPerf Tiny does).

Protocol ``kwsbench-latency/1``:

1. **Input**: one tensor drawn from a standard normal with seed 0 (``torch.Generator().manual_seed(0)``)
   at the model's declared shape ``(batch, 1, n_features, frames)``, or ``(batch, 16000)`` raw audio when
   the frontend is timed too. The input is built and converted to the backend's own array type before
   timing; converting the output back is not timed.
2. **What is timed**: ``"model"`` (features in, logits out) or ``"frontend+model"`` (16 kHz audio in,
   log-mel computed inside the same graph, logits out). One call of the backend's run function per
   sample, timed with ``time.perf_counter_ns`` around the call alone.
3. **Warm-up**: ``warmup`` untimed calls first (allocator pools, lazy kernel selection, JIT).
4. **Repetitions**: at least ``iterations`` timed calls, continued until ``min_time_s`` of timed calls
   have passed, never more than ``max_iterations``.
5. **Threads**: ``threads`` intra-op threads for every runtime (``torch.set_num_threads`` restored after,
   ONNX Runtime ``intra_op_num_threads`` with one inter-op thread, OpenVINO ``INFERENCE_NUM_THREADS``).
6. **Reported statistics**: median, 90th percentile, interquartile range, mean, min, max (milliseconds,
   numpy's linear-interpolation percentiles) and the number of timed calls. The median is the headline.

Every result carries the ``Protocol`` it was taken under (``to_dict()``), so figures taken under another
version are never compared silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kwsbench.errors import ConfigError

PROTOCOL_VERSION = "kwsbench-latency/1"
TIMED_KINDS = ("model", "frontend+model")
# The training-speed protocol's defaults (kwsbench.measure.train_speed states that protocol), shared by the
# Python API and `kwsbench bench --train`: the paper's batch 100 on both cores of the reference machine.
TRAIN_DEFAULTS = {"batch": 100, "threads": 2, "steps": 20, "warmup": 3}


@dataclass(frozen=True)
class Protocol:
    """How one latency figure was taken; see the module docstring for each field's meaning."""

    version: str = PROTOCOL_VERSION
    warmup: int = 20
    iterations: int = 100
    min_time_s: float = 0.3
    max_iterations: int = 2000
    timed: str = "model"
    input: str = "standard normal, seed 0, declared shape"
    threads: int = 1
    batch: int = 1

    def __post_init__(self) -> None:
        if self.timed not in TIMED_KINDS:
            raise ConfigError(f"timed must be one of {', '.join(TIMED_KINDS)}, got {self.timed!r}")
        for name in ("warmup", "iterations", "threads", "batch", "max_iterations"):
            least = 0 if name == "warmup" else 1
            if getattr(self, name) < least:
                raise ConfigError(f"{name} must be at least {least}, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)
