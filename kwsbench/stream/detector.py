"""The streaming detector: the last second of audio scored every hop, posteriors smoothed, then a threshold
and a refractory period turn them into detections ``(time_s, keyword, score)``.

- Hop ``i`` (from 0) ends at sample ``(i + 1) * hop_samples`` of the source; its window is the
  ``window_samples`` before that, zeros before the source began (the ring buffer starts silent). A
  detection's ``time_s`` is the end of that window, in seconds from the start of the source.
- Posteriors are the softmax of the scorer's logits; smoothing is the mean of the last
  ``round(smooth_ms / hop_ms)`` hops' posteriors (fewer at the very start).
- At each hop the keyword with the highest smoothed posterior fires when that posterior is at least
  ``threshold`` and at least ``round(refractory_ms / hop_ms)`` hops have passed since the last detection of
  any keyword. ``_silence_`` and ``_unknown_`` never fire.

Every step is a small piece that works on any number of hops at once with identical results: ``listen``
feeds one hop at a time (:class:`StreamingDetector`), ``stream-eval`` scores a whole stream in batches
(:func:`score_stream`) and sweeps thresholds on the score matrix (:func:`smoothed_best`, :func:`fire`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from tqdm import tqdm

from kwsbench.data.records import CLIP_SAMPLES, SAMPLE_RATE, SILENCE, UNKNOWN
from kwsbench.errors import ConfigError

if TYPE_CHECKING:  # the detector itself needs neither torch nor a runtime
    from kwsbench.stream.scorer import Scorer

NEVER_FIRE = (SILENCE, UNKNOWN)


@dataclass(frozen=True)
class DetectorSettings:
    """How windows are scored and turned into detections (see the module docstring)."""

    hop_ms: float = 100.0
    smooth_ms: float = 300.0
    threshold: float = 0.7
    refractory_ms: float = 1000.0
    sample_rate: int = SAMPLE_RATE
    window_samples: int = CLIP_SAMPLES
    # How long before its hop's end the scored window ends: a streaming model's look-ahead (set from the
    # scorer by ``for_scorer``), so that a detection is dated by the audio it heard, not by when it fired.
    lag_samples: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.hop_ms) and 1 <= self.hop_samples <= self.window_samples):
            window_ms = 1000 * self.window_samples / self.sample_rate
            raise ConfigError(
                f"--hop-ms {self.hop_ms}: must be between one sample and the {window_ms:g} ms window"
            )
        if not (math.isfinite(self.smooth_ms) and self.smooth_ms >= 0):
            raise ConfigError(f"--smooth-ms {self.smooth_ms}: must be 0 (no smoothing) or more")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold {self.threshold}: a posterior threshold must be in [0, 1]")
        if not (math.isfinite(self.refractory_ms) and self.refractory_ms >= 0):
            raise ConfigError(f"--refractory-ms {self.refractory_ms}: must be 0 or more")

    @property
    def hop_samples(self) -> int:
        return round(self.hop_ms * self.sample_rate / 1000)

    @property
    def smooth_hops(self) -> int:
        """Hops averaged by the smoother (at least 1: the hop itself)."""
        return max(1, round(self.smooth_ms / self.hop_ms))

    @property
    def refractory_hops(self) -> int:
        """Hops that must pass after a detection before the next one."""
        return round(self.refractory_ms / self.hop_ms)

    def hop_time(self, hop: int | np.ndarray) -> float | np.ndarray:
        """Seconds from the start of the source to the end of hop ``hop``'s window."""
        return ((np.asarray(hop) + 1) * self.hop_samples - self.lag_samples) / self.sample_rate

    def for_scorer(self, scorer: Scorer) -> DetectorSettings:
        """These settings with ``scorer``'s lag (0 for a scorer of whole windows)."""
        return replace(self, lag_samples=int(getattr(scorer, "lag_samples", 0)))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Detection:
    """A keyword heard: ``time_s`` is the end of the window that fired, ``score`` its smoothed posterior."""

    time_s: float
    keyword: str
    score: float

    def to_dict(self) -> dict:
        return {"time_s": round(self.time_s, 3), "keyword": self.keyword, "score": round(self.score, 4)}


def keyword_columns(labels: list[str]) -> np.ndarray:
    """Indices of the classes that may fire (every label but ``_silence_`` and ``_unknown_``)."""
    columns = np.array([i for i, label in enumerate(labels) if label not in NEVER_FIRE], dtype=np.int64)
    if columns.size == 0:
        raise ConfigError(f"the model's labels {labels} hold no keyword; use a model trained on keywords")
    return columns


def posteriors(logits: np.ndarray) -> np.ndarray:
    """Softmax over classes in float64: ``(N, C)`` logits -> ``(N, C)`` posteriors."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class RingBuffer:
    """The last ``size`` samples, readable oldest-first as one contiguous ``(size,)`` view without a copy.

    Every sample is written twice, at ``p`` and ``p + size`` of a ``2 * size`` array, so the window that
    starts at the write position never wraps.
    """

    def __init__(self, size: int):
        self.size = size
        self._data = np.zeros(2 * size, dtype=np.float32)
        self._pos = 0

    def write(self, samples: np.ndarray) -> None:
        """Append ``samples`` ``(n,)``; only the last ``size`` of them can matter."""
        samples = samples[-self.size :]
        while samples.size:
            take = min(samples.size, self.size - self._pos)
            self._data[self._pos : self._pos + take] = samples[:take]
            self._data[self._pos + self.size : self._pos + self.size + take] = samples[:take]
            self._pos = (self._pos + take) % self.size
            samples = samples[take:]

    def window(self) -> np.ndarray:
        """The last ``size`` samples, oldest first: ``(size,)`` (a view; copy it to keep it)."""
        return self._data[self._pos : self._pos + self.size]


class MovingAverage:
    """Mean of each row and the ``length - 1`` rows before it, over blocks fed in order: ``(m, C) -> (m, C)``.

    The first rows of a stream average the rows that exist. Each output adds the same rows in the same
    order whatever the blocks are, so a stream fed hop by hop and all at once give identical numbers.
    """

    def __init__(self, length: int, classes: int):
        self.length = length
        self._history = np.zeros((length - 1, classes), dtype=np.float64)
        self._seen = 0

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        m = rows.shape[0]
        full = np.concatenate([self._history, rows])
        total = full[0:m].copy()
        for k in range(1, self.length):
            total += full[k : k + m]
        count = np.minimum(self._seen + np.arange(1, m + 1), self.length)
        self._history = full[m:]
        self._seen += m
        return total / count[:, None]


def smoothed_best(
    logits: np.ndarray, columns: np.ndarray, smoother: MovingAverage
) -> tuple[np.ndarray, np.ndarray]:
    """``(score (N,), keyword column (N,))``: the best keyword's smoothed posterior at each of N hops.

    ``columns``: :func:`keyword_columns`; ``smoother`` carries the history between calls (a new one: the
    stream starts with these rows).
    """
    smoothed = smoother(posteriors(logits))[:, columns]
    best = smoothed.argmax(axis=1)
    return smoothed[np.arange(len(best)), best], columns[best]


def fire(
    scores: np.ndarray,
    threshold: float,
    refractory_hops: int,
    first_hop: int = 0,
    last_fired: int | None = None,
) -> list[int]:
    """The hops that fire: at least ``threshold`` and ``refractory_hops`` after the previous firing.

    ``scores`` ``(m,)`` are hops ``first_hop ..``; ``last_fired`` is the stream's previous firing hop.
    Jumps from one candidate to the next past each refractory period: cost grows with detections, not hops.
    """
    candidates = np.flatnonzero(scores >= threshold) + first_hop
    gap = max(refractory_hops, 1)  # a hop fires once, whatever the refractory period
    fired: list[int] = []
    pos = 0 if last_fired is None else int(np.searchsorted(candidates, last_fired + gap))
    while pos < candidates.size:
        hop = int(candidates[pos])
        fired.append(hop)
        pos = int(np.searchsorted(candidates, hop + gap))
    return fired


def score_stream(
    chunks: Iterable[np.ndarray],
    scorer: Scorer,
    settings: DetectorSettings,
    *,
    batch: int = 16,
    total_samples: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Logits of every hop of a stream, windows scored ``batch`` at a time: ``(hops, C)`` float32.

    The windows are the ring buffer's (zeros before the source); a trailing part of a hop is not scored.
    An incremental scorer gets the hops themselves, in order, from a reset state.
    """
    window, hop = settings.window_samples, settings.hop_samples
    incremental = _check_incremental(scorer, settings)
    keep = 0 if incremental else window - hop  # the part of each window that the next hop's window shares
    pending = np.zeros(keep, dtype=np.float32)
    out: list[np.ndarray] = []
    total = None if total_samples is None else total_samples // hop
    with tqdm(
        total=total, desc="scoring", unit="hop", unit_scale=True, leave=False, disable=not progress
    ) as bar:
        for chunk in _with_end(chunks):  # None marks the end: the last, partial batch is scored then
            if chunk is not None:
                pending = np.concatenate([pending, np.asarray(chunk, dtype=np.float32)])
            ready = (pending.size - keep) // hop
            while ready >= batch or (chunk is None and ready > 0):
                count = min(ready, batch)
                if incremental:
                    out.append(scorer.score_hops(pending[: count * hop].reshape(count, hop)))
                else:
                    views = sliding_window_view(pending[: keep + count * hop], window)[::hop]
                    out.append(scorer.score(np.ascontiguousarray(views)))
                pending = pending[count * hop :]
                ready -= count
                bar.update(count)
    if not out:
        return np.zeros((0, len(scorer.labels)), dtype=np.float32)
    return np.concatenate(out)


def _check_incremental(scorer: Scorer, settings: DetectorSettings) -> bool:
    """Whether ``scorer`` takes hops (reset for a new stream); its hop must then be the detector's."""
    if not getattr(scorer, "incremental", False):
        return False
    if scorer.hop_samples != settings.hop_samples:
        raise ConfigError(
            f"--hop-ms {settings.hop_ms:g}: the streaming model steps {scorer.hop_samples} samples "
            f"({1000 * scorer.hop_samples / settings.sample_rate:g} ms); use that hop"
        )
    scorer.reset()
    return True


def _with_end(chunks):
    yield from chunks
    yield None


class StreamingDetector:
    """Live detection: ``push`` audio as it arrives, get the detections of the hops it completes.

    ``hops`` counts scored hops; ``processing_s`` is the time spent per hop (window, features, model,
    smoothing, threshold), so ``processing_s / audio_s`` is the real-time factor. With ``keep_scores`` the
    raw posteriors of every hop are kept in ``scores`` (for checks against the per-clip model).
    """

    def __init__(self, scorer: Scorer, settings: DetectorSettings, *, keep_scores: bool = False):
        if settings.sample_rate != scorer.sample_rate or settings.window_samples != scorer.window_samples:
            raise ConfigError(
                f"the model takes {scorer.window_samples} samples at {scorer.sample_rate} Hz; "
                "build the detector settings with those"
            )
        self.scorer, self.settings = scorer, settings.for_scorer(scorer)
        self._incremental = _check_incremental(scorer, settings)
        self.labels = list(scorer.labels)
        self._columns = keyword_columns(self.labels)
        self._ring = RingBuffer(settings.window_samples)
        self._smoother = MovingAverage(settings.smooth_hops, len(self.labels))
        self._pending = 0
        self._last_fired: int | None = None
        self.samples = 0
        self.hops = 0
        self.processing_s = 0.0
        self.scores: list[np.ndarray] | None = [] if keep_scores else None

    @property
    def audio_s(self) -> float:
        return self.samples / self.settings.sample_rate

    def push(self, samples: np.ndarray) -> list[Detection]:
        """Feed float32 mono ``(n,)`` samples; returns the detections of every hop they complete."""
        hop = self.settings.hop_samples
        detections: list[Detection] = []
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.samples += samples.size
        while samples.size:
            take = min(hop - self._pending, samples.size)
            self._ring.write(samples[:take])
            self._pending += take
            samples = samples[take:]
            if self._pending == hop:
                self._pending = 0
                detections += self._hop()
        return detections

    def _hop(self) -> list[Detection]:
        start = time.perf_counter()
        if self._incremental:
            logits = self.scorer.score_hops(self._ring.window()[None, -self.settings.hop_samples :])
        else:
            logits = self.scorer.score(self._ring.window()[None])
        if self.scores is not None:
            self.scores.append(posteriors(logits)[0])
        score, column = smoothed_best(logits, self._columns, self._smoother)
        fired = fire(
            score, self.settings.threshold, self.settings.refractory_hops, self.hops, self._last_fired
        )
        detections = []
        if fired:
            self._last_fired = fired[-1]
            detections.append(
                Detection(
                    float(self.settings.hop_time(self.hops)), self.labels[int(column[0])], float(score[0])
                )
            )
        self.hops += 1
        self.processing_s += time.perf_counter() - start
        return detections
