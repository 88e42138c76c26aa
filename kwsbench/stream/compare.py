"""How far streaming scores are from per-window scores, on a synthetic stream: posteriors and FRR at 1 FA/h.

:func:`compare_streaming` takes any BC-ResNet checkpoint. Its *streaming* scores:

- a causal model (``temporal_padding="causal"``): the incremental step itself (:class:`StepScorer`, eager);
- the standard model, streamed with a delay: every centred temporal convolution reads ``(k - 1) * d / 2``
  frames ahead, so a streaming executor emits frame ``t`` once frame ``t + D`` has arrived (``D`` = the sum
  of those look-aheads: 58 frames for BC-ResNet, plus the frontend's 2) and delays each block's identity and
  ``f2`` branches to match. What it emits equals the centred model run once over the whole stream (zero
  padding before the stream only, the same argument as for the causal model, whose equality is tested), so
  the scores are computed that way (:func:`kwsbench.stream.incremental.whole_sequence_logits`), ``D`` frames
  late in wall-clock time.

Streaming hop ``i`` averages the ``T`` frames ending 2 frames before the hop's end (the frontend's
look-ahead), so the per-window model is compared on those same 1 s windows (the stream delayed by 2 frames):
the posterior difference is then only the window's edges (reflect and zero padding in the per-window model,
real audio and activations in the stream). FRR at 1 FA/h is measured with the detector's own windows for the
per-window model and with the streaming scores at the hop's time for streaming; both go through
:func:`kwsbench.stream.evaluate.evaluate_stream` (same smoothing, sweep and matching).
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


def model_delay_frames(model) -> int:
    """Frames a BC-ResNet reads ahead: ``(k - 1) * d / 2`` summed over its centred temporal convolutions.

    A causal model reads none. Residual branches do not add to it (they are delayed to match, not ahead).
    """
    from torch import nn

    from kwsbench.models.layers import CausalConv2d

    return sum(
        (m.kernel_size[1] - 1) * m.dilation[1] // 2
        for m in model.modules()
        if isinstance(m, nn.Conv2d) and not isinstance(m, CausalConv2d) and m.kernel_size[1] > 1
    )


def compare_streaming(
    checkpoint: str | os.PathLike | None,
    dataset,
    *,
    hours: float = 0.25,
    snr_db: float = 10.0,
    seed: int = 0,
    hop_ms: float = 100.0,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> StreamingComparison:
    """Compare streaming and per-window scores of ``checkpoint`` (None: the bundled BC-ResNet-1) on a stream.

    ``dataset``: the ``DatasetSpec`` whose test split and noise make the stream (``evaluate_synthetic``).
    """
    import torch

    from kwsbench.checkpoints import bundled_checkpoint
    from kwsbench.models.checkpoint import load_checkpoint, model_from_checkpoint
    from kwsbench.runner.loop import open_cache
    from kwsbench.stream.compose import build_synthetic_stream
    from kwsbench.stream.evaluate import evaluate_stream
    from kwsbench.stream.incremental import keep_samples, uncentred_log_mel, whole_sequence_logits
    from kwsbench.stream.scorer import CheckpointScorer, StepScorer

    checkpoint = checkpoint if checkpoint is not None else bundled_checkpoint()
    ckpt = load_checkpoint(checkpoint)
    model, spec = model_from_checkpoint(ckpt, str(checkpoint))
    causal = getattr(model, "temporal_padding", "same") == "causal"
    settings = DetectorSettings(hop_ms=hop_ms)
    hop = settings.hop_samples
    cache = open_cache(dataset, cache_dir=cache_dir, progress=progress)
    stream = build_synthetic_stream(cache, hours=hours, snr_db=snr_db, seed=seed)
    audio = np.concatenate(list(stream.chunks()))
    log_mel = uncentred_log_mel(spec, settings.sample_rate, settings.window_samples)
    # The newest streaming frame is centred this many samples before the hop's end (see incremental).
    lag = (
        keep_samples(log_mel.win_length, log_mel.hop_length)
        + hop
        - log_mel.win_length // 2
        - (hop // log_mel.hop_length - 1) * log_mel.hop_length
    )

    per_window = CheckpointScorer(checkpoint, backend="eager", threads=torch.get_num_threads(), batch=16)
    detector_logits = score_stream([audio], per_window, settings, progress=progress)
    delayed = np.concatenate([np.zeros(lag, dtype=np.float32), audio])  # windows ending `lag` earlier
    aligned_logits = score_stream([delayed], per_window, settings, progress=progress)[
        : detector_logits.shape[0]
    ]
    if causal:
        step = StepScorer(checkpoint, backend="eager", threads=torch.get_num_threads(), hop_ms=hop_ms)
        streaming_logits = score_stream([audio], step, settings, progress=progress)
    else:
        streaming_logits = whole_sequence_logits(model, spec, torch.from_numpy(audio)[None], hop_samples=hop)[
            0
        ].numpy()
    hops = min(len(streaming_logits), len(aligned_logits))
    first = -(-settings.window_samples // hop)  # the first second: windows reach back before the stream
    diff = np.abs(posteriors(streaming_logits[first:hops]) - posteriors(aligned_logits[first:hops]))

    labels = list(ckpt["labels"])
    records = {}
    for kind, logits in (("per_window", detector_logits), ("streaming", streaming_logits)):
        replay = _Replay(logits, labels, hop, str(ckpt["model"]), str(checkpoint), kind)
        records[kind] = evaluate_stream(
            replay, [audio], stream.truth, settings, total_samples=stream.total_samples, progress=progress
        )
    frames = model_delay_frames(model)
    return StreamingComparison(
        model=str(ckpt["model"]),
        temporal_padding="causal" if causal else "same",
        hours=stream.total_samples / settings.sample_rate / 3600,
        hops=hops,
        delay_ms=1000 * (lag + frames * log_mel.hop_length) / settings.sample_rate,
        max_posterior_difference=float(diff.max()),
        mean_posterior_difference=float(diff.mean()),
        frr_per_window=records["per_window"].false_rejection_rate,
        frr_streaming=records["streaming"].false_rejection_rate,
        fa_per_hour_per_window=records["per_window"].false_alarms_per_hour,
        fa_per_hour_streaming=records["streaming"].false_alarms_per_hour,
    )
