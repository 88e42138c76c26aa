"""How far streaming scores are from per-window scores, on a synthetic stream: posteriors and FRR at 1 FA/h.

:func:`compare_streaming` takes any BC-ResNet checkpoint and streams it with the incremental step
(:class:`StepScorer`, eager): a causal model (``temporal_padding="causal"``) as it is, a standard one with a
delay (:func:`kwsbench.stream.incremental.delay_compensated`: its centred temporal convolutions made causal and
``D`` frames late, 58 for BC-ResNet, each block's identity and ``f2`` branches delayed to match).

Streaming hop ``i`` scores the ``T`` frames ending ``lag`` samples before the hop's end (the frontend's
look-ahead, 20 ms, plus that delay), so the per-window model is compared on those same 1 s windows (the stream
delayed by ``lag``): the posterior difference is then only the window's edges (reflect and zero padding in the
per-window model, real audio and activations in the stream). FRR at 1 FA/h is measured with the detector's own
windows for the per-window model and with the streaming scores dated by the window they scored; both go
through :func:`kwsbench.stream.evaluate.evaluate_stream` (same smoothing, sweep and matching).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from kwsbench.stream.detector import DetectorSettings, posteriors, score_stream


@dataclass
class _Replay:
    """An incremental scorer that hands out logits computed beforehand, hop after hop (for the evaluation)."""

    logits: np.ndarray
    labels: list[str]
    hop_samples: int
    name: str
    source: str
    note: str
    lag_samples: int = 0
    incremental: bool = True
    sample_rate: int = 16000
    window_samples: int = 16000
    _next: int = field(default=0, repr=False)

    def reset(self) -> None:
        self._next = 0

    def score_hops(self, hops: np.ndarray) -> np.ndarray:
        rows = self.logits[self._next : self._next + hops.shape[0]]
        self._next += hops.shape[0]
        return rows


@dataclass(frozen=True)
class StreamingComparison:
    """Streaming against per-window scoring of one checkpoint on one synthetic stream (see the module doc)."""

    model: str
    temporal_padding: str
    hours: float
    hops: int
    delay_ms: float  # how long after a window's end streaming scores it (frontend + model look-ahead)
    max_posterior_difference: float  # over every hop after the first second, every class
    mean_posterior_difference: float
    frr_per_window: float | None  # at 1 false alarm per hour
    frr_streaming: float | None
    fa_per_hour_per_window: float | None
    fa_per_hour_streaming: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def compare_streaming(
    checkpoint: str | os.PathLike | None,
    dataset,
    *,
    hours: float = 0.25,
    snr_db: float = 10.0,
    seed: int = 0,
    hop_ms: float = 100.0,
    cache_dir: str | os.PathLike | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> StreamingComparison:
    """Compare streaming and per-window scores of ``checkpoint`` (None: the bundled BC-ResNet-1) on a stream.

    ``dataset``: the ``DatasetSpec`` whose test split and noise make the stream (``evaluate_synthetic``).
    ``threads``: intra-op threads of both scorers (default: torch's current count).
    """
    import torch

    from kwsbench.checkpoints import bundled_checkpoint
    from kwsbench.models.checkpoint import load_checkpoint
    from kwsbench.runner.loop import open_cache
    from kwsbench.stream.compose import build_synthetic_stream
    from kwsbench.stream.evaluate import evaluate_stream
    from kwsbench.stream.scorer import CheckpointScorer, StepScorer

    checkpoint = checkpoint if checkpoint is not None else bundled_checkpoint()
    settings = DetectorSettings(hop_ms=hop_ms)
    hop = settings.hop_samples
    cache = open_cache(dataset, cache_dir=cache_dir, progress=progress)
    stream = build_synthetic_stream(cache, hours=hours, snr_db=snr_db, seed=seed)
    audio = np.concatenate(list(stream.chunks()))

    threads = threads or torch.get_num_threads()
    step = StepScorer(checkpoint, backend="eager", threads=threads, hop_ms=hop_ms)
    streaming_logits = score_stream([audio], step, settings, progress=progress)
    per_window = CheckpointScorer(checkpoint, backend="eager", threads=threads, batch=16)
    detector_logits = score_stream([audio], per_window, settings, progress=progress)
    lag = step.lag_samples
    delayed = np.concatenate([np.zeros(lag, dtype=np.float32), audio])  # windows ending `lag` earlier
    aligned_logits = score_stream([delayed], per_window, settings, progress=progress)[
        : detector_logits.shape[0]
    ]
    hops = min(len(streaming_logits), len(aligned_logits))
    # Skip the windows that reach back before the stream, and for a delayed model also those reaching into
    # its first D frames, where its delay lines still hold their initial zeros (D frames <= lag).
    first = -(-(settings.window_samples + 2 * lag) // hop)
    diff = np.abs(posteriors(streaming_logits[first:hops]) - posteriors(aligned_logits[first:hops]))

    records = {}
    for kind, logits, late in (("per_window", detector_logits, 0), ("streaming", streaming_logits, lag)):
        replay = _Replay(logits, step.labels, hop, step.name, str(checkpoint), kind, late)
        records[kind] = evaluate_stream(
            replay, [audio], stream.truth, settings, total_samples=stream.total_samples, progress=progress
        )
    options = load_checkpoint(checkpoint).get("options") or {}
    return StreamingComparison(
        model=step.name,
        temporal_padding=str(options.get("temporal_padding", "same")),
        hours=stream.total_samples / settings.sample_rate / 3600,
        hops=hops,
        delay_ms=1000 * lag / settings.sample_rate,
        max_posterior_difference=float(diff.max()),
        mean_posterior_difference=float(diff.mean()),
        frr_per_window=records["per_window"].false_rejection_rate,
        frr_streaming=records["streaming"].false_rejection_rate,
        fa_per_hour_per_window=records["per_window"].false_alarms_per_hour,
        fa_per_hour_streaming=records["streaming"].false_alarms_per_hour,
    )


def format_comparison(c: StreamingComparison) -> str:
    """The lines ``kwsbench stream-eval --compare`` prints."""

    def pct(x: float | None) -> str:
        return "n/a (no threshold reaches 1 FA/h)" if x is None else f"{100 * x:.1f} %"

    return "\n".join(
        [
            f"{c.model} ({c.temporal_padding} padding), {c.hours:.2f} h synthetic stream, {c.hops} hops; "
            f"streaming scores each window {c.delay_ms:g} ms after its end",
            f"  posterior difference, streaming vs the same windows per window: max {c.max_posterior_difference:.3f}, "
            f"mean {c.mean_posterior_difference:.4f}",
            f"  FRR at 1 FA/h: per window {pct(c.frr_per_window)}, streaming {pct(c.frr_streaming)}",
        ]
    )
