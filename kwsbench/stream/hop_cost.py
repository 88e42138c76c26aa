"""Per-hop cost of streaming detection: the incremental step against re-running the whole 1 s window.

For each causal BC-ResNet (random weights: the cost does not depend on them) one hop is timed, log-mel
included, at batch 1 under the latency protocol (:mod:`kwsbench.measure.protocol`, ``frontend+model``):

- *per window*: the 1 s window through log-mel and the model on each stream backend
  (``kwsbench.stream.runtime``: optimized, ONNX Runtime, OpenVINO, eager), and on the native C kernel
  (:mod:`kwsbench.stream.native`) as all the window's frames (101 for BC-ResNet) in one call from its state:
  the same work as the per-clip model, so the native step is compared with the native window too. The
  fastest is kept;
- *streaming*: one hop of new audio through the step function with its state: native, then
  :mod:`kwsbench.export.streaming` (one ONNX input and output per state tensor: OpenVINO with the state
  kept inside the infer request, ONNX Runtime with it bound once in two alternating I/O bindings), eager;
  the fastest kept. A timed step is what a stream pays: copy the hop in, run, copy the logits out.

Without a C compiler the native rows are left out and the table says why.

Both are measured one after the other in the same process; their ratio is the figure to read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn

from kwsbench.measure.latency import measure_latency
from kwsbench.measure.protocol import Protocol
from kwsbench.stream.backend_names import STREAM_BACKENDS

STEP_RUNTIMES = ("native", "onnxruntime", "openvino", "eager")
_KIND = {"causal": "causal", "same": "standard, streamed with its delay"}


@dataclass(frozen=True)
class HopCost:
    """One model's per-hop cost: median ms per backend for the window and for the step, and the best of each."""

    model: str
    hop_ms: float
    window_ms: dict[str, float]
    step_ms: dict[str, float]
    protocol: dict = field(default_factory=dict)
    temporal_padding: str = "causal"  # "same": the standard model streamed with its delay lines
    unavailable: dict[str, str] = field(default_factory=dict)  # runtime -> why it was not timed

    @property
    def best_window(self) -> tuple[str, float]:
        return min(self.window_ms.items(), key=lambda kv: kv[1])

    @property
    def best_step(self) -> tuple[str, float]:
        return min(self.step_ms.items(), key=lambda kv: kv[1])

    @property
    def speedup(self) -> float:
        """Best per-window cost over best streaming cost: how many times cheaper a streamed hop is."""
        return self.best_window[1] / self.best_step[1]

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "best_window": list(self.best_window),
            "best_step": list(self.best_step),
            "speedup": self.speedup,
        }


def hop_cost(
    name: str,
    *,
    hop_ms: float = 100.0,
    threads: int = 1,
    window_backends: tuple[str, ...] = STREAM_BACKENDS,
    step_runtimes: tuple[str, ...] = STEP_RUNTIMES,
    protocol: Protocol | None = None,
    temporal_padding: str = "causal",
) -> HopCost:
    """Time model ``name`` per hop both ways, see the module docstring.

    ``temporal_padding``: ``"causal"``, or ``"same"`` for the standard model, whose step also carries the
    delay lines of :func:`kwsbench.stream.incremental.delay_compensated`.
    """
    from kwsbench.data.features import make_frontend
    from kwsbench.data.records import CLIP_SAMPLES, SAMPLE_RATE
    from kwsbench.errors import BackendError
    from kwsbench.export.streaming import open_step
    from kwsbench.models import create_model, model_info
    from kwsbench.stream.incremental import streaming_model
    from kwsbench.stream.runtime import build_runtime

    protocol = replace(
        protocol or Protocol(),
        timed="frontend+model",
        input="speech-scale noise (std 0.1), seed 0",
        threads=threads,
    )
    spec = model_info(name).input
    torch.manual_seed(0)
    model = create_model(name, temporal_padding=temporal_padding).eval()
    hop_samples = round(hop_ms * SAMPLE_RATE / 1000)
    generator = np.random.default_rng(0)
    window = (generator.standard_normal((1, CLIP_SAMPLES)) * 0.1).astype(np.float32)
    hop = np.ascontiguousarray(window[:, :hop_samples])

    def median(fn, x) -> float:
        return measure_latency(fn, x, threads=threads, protocol=protocol).median_ms

    windowed = nn.Sequential(make_frontend(spec), model).eval()
    window_ms = {}
    for backend in window_backends:
        runtime = build_runtime(backend, windowed, torch.from_numpy(window), threads=threads, label=name)
        window_ms[backend] = median(runtime.run, window)
    step = streaming_model(model, spec, hop_samples=hop_samples)
    step_ms, unavailable = {}, {}
    for runtime in step_runtimes:
        try:
            session = open_step(step, runtime, threads=threads)
        except BackendError as err:
            if runtime != "native":
                raise
            unavailable[runtime] = str(err)
            continue
        step_ms[runtime] = median(session.step, hop)
    if "native" in step_ms:
        # The window re-run on the native kernel: its frames in one call (101 hop-lengths of samples).
        frames = spec.frames * step.frontend.log_mel.hop_length
        session = open_step(streaming_model(model, spec, hop_samples=frames), "native", threads=threads)
        whole = (generator.standard_normal((1, frames)) * 0.1).astype(np.float32)
        window_ms["native"] = median(session.step, whole)
    return HopCost(name, hop_ms, window_ms, step_ms, protocol.to_dict(), temporal_padding, unavailable)


def format_hop_costs(costs: list[HopCost]) -> str:
    """The table ``kwsbench bench --streaming`` prints: per-hop ms per backend, the best of each, the ratio."""
    lines = []
    for c in costs:
        windows = ", ".join(f"{k} {v:.3f}" for k, v in c.window_ms.items())
        steps = ", ".join(f"{k} {v:.3f}" for k, v in c.step_ms.items())
        (wb, wms), (sb, sms) = c.best_window, c.best_step
        lines += [
            f"{c.model} ({_KIND[c.temporal_padding]}), {c.hop_ms:g} ms hop, features included, median ms per hop:",
            f"  re-run 1 s window: {windows}",
            f"  streaming step:    {steps}",
            f"  best: window {wms:.3f} ({wb}), streaming {sms:.3f} ({sb}): streaming {c.speedup:.1f}x cheaper",
            *(f"  not measured: {k} ({why})" for k, why in c.unavailable.items()),
        ]
    if costs:
        p = costs[0].protocol
        lines.append(
            f"protocol {p['version']}: {p['warmup']} warm-up calls, median of >= {p['iterations']} calls and "
            f">= {p['min_time_s']} s, {p['threads']} thread(s), batch 1"
            + (
                " (native: always one)"
                if p["threads"] > 1 and any("native" in c.step_ms for c in costs)
                else ""
            )
        )
    return "\n".join(lines)
