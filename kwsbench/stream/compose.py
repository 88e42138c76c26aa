"""Long synthetic streams: held-out clips placed at random, non-overlapping times over background noise.

The stream is cut into slots of ``spacing_s``; each slot holds one clip (a keyword or an ``_unknown_`` word
of the split, ``_silence_`` clips left out) at a uniformly random start, at least ``min_gap_s`` from the
slot's clips on either side. Clips are used in a seeded random order, each once before any repeats. The
true timeline is every clip's 1 s span and label.

Levels: every clip is scaled to the split's median clip RMS (over its whole second), and the background
sits ``snr_db`` below that level: each clip has exactly that SNR against the noise. The background is a
sequence of ``segment_s`` crops of random noise files (each file scaled to the same RMS), joined by 50 ms
linear cross-fades so that no segment boundary clicks. Mixed samples are clipped to [-1, 1].

Nothing is held in memory but the plan: ``render`` makes any span of the stream on demand, so an hour
(57.6 M samples) is scored block by block.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from kwsbench.atomic import write_atomically, write_text_atomically
from kwsbench.data.cache import ClipCache, as_float32
from kwsbench.data.records import SILENCE
from kwsbench.errors import ConfigError, DataError
from kwsbench.stream.labels import format_labels
from kwsbench.stream.matching import Occurrence

FADE_S = 0.05


@dataclass
class SyntheticStream:
    """A planned stream (see the module docstring); ``truth`` is its true timeline."""

    sample_rate: int
    total_samples: int
    clips: np.ndarray  # (N, clip_samples) the split's waveforms as cached (int16 or float32)
    starts: np.ndarray  # (P,) int64 first sample of each placed clip, ascending
    rows: np.ndarray  # (P,) int64 row of ``clips`` placed there
    gains: np.ndarray  # (P,) float32 gain of each placed clip
    noise: list[np.ndarray]  # float32 files, each scaled to ``noise_rms``
    segment_files: np.ndarray  # (S,) int64 noise file of each background segment
    segment_offsets: np.ndarray  # (S,) int64 where in that file the segment starts
    segment_samples: int
    fade_samples: int
    truth: list[Occurrence] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def hours(self) -> float:
        return self.total_samples / self.sample_rate / 3600

    def _background(self, begin: int, end: int, out: np.ndarray) -> None:
        length, fade = self.segment_samples, self.fade_samples
        ramp = (np.arange(fade, dtype=np.float32) + 0.5) / fade
        first = max(0, (begin - fade) // length)
        for k in range(first, min(len(self.segment_files), end // length + 1)):
            # Segment k sounds on [k * L, (k + 1) * L + fade): fading in over its first `fade` samples
            # (not the first segment) and out over its last, under the fade-in of segment k + 1.
            seg_begin = k * length
            lo, hi = max(begin, seg_begin), min(end, seg_begin + length + fade)
            if lo >= hi:
                continue
            source = self.noise[self.segment_files[k]]
            offset = int(self.segment_offsets[k])
            piece = source[offset + lo - seg_begin : offset + hi - seg_begin].copy()
            envelope = np.ones(length + fade, dtype=np.float32)
            if k > 0:
                envelope[:fade] = ramp
            envelope[length:] = ramp[::-1]
            piece *= envelope[lo - seg_begin : hi - seg_begin]
            out[lo - begin : hi - begin] += piece

    def render(self, begin: int, end: int) -> np.ndarray:
        """Samples ``[begin, end)`` of the stream: float32 ``(end - begin,)``."""
        begin, end = max(0, begin), min(end, self.total_samples)
        out = np.zeros(max(0, end - begin), dtype=np.float32)
        if end <= begin:
            return out
        self._background(begin, end, out)
        width = self.clips.shape[1]
        first = int(np.searchsorted(self.starts, begin - width, side="right"))
        last = int(np.searchsorted(self.starts, end, side="left"))
        for start, row, gain in zip(
            self.starts[first:last], self.rows[first:last], self.gains[first:last], strict=True
        ):
            lo, hi = max(begin, int(start)), min(end, int(start) + width)
            clip = as_float32(self.clips[row, lo - start : hi - start])
            out[lo - begin : hi - begin] += gain * clip
        return np.clip(out, -1.0, 1.0, out=out)

    def chunks(self, seconds: float = 60.0) -> Iterator[np.ndarray]:
        """The whole stream in order, ``seconds`` at a time."""
        size = max(1, round(seconds * self.sample_rate))
        for begin in range(0, self.total_samples, size):
            yield self.render(begin, begin + size)

    def save(self, wav_path: str | os.PathLike, labels_path: str | os.PathLike) -> None:
        """Write the stream as 16-bit PCM WAV and its truth as a label file, each atomically."""
        import soundfile

        def write(f) -> None:
            with soundfile.SoundFile(f, "w", self.sample_rate, 1, "PCM_16", format="WAV") as wav:
                for chunk in self.chunks():
                    wav.write(chunk)

        write_atomically(wav_path, write)
        write_text_atomically(labels_path, format_labels(self.truth))


def _rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=-1))


def build_synthetic_stream(
    cache: ClipCache,
    *,
    hours: float,
    snr_db: float,
    seed: int,
    split: str = "test",
    spacing_s: float = 10.0,
    min_gap_s: float = 2.0,
    segment_s: float = 20.0,
) -> SyntheticStream:
    """Plan a stream of ``hours`` from ``split`` of ``cache`` over its background noise (module docstring)."""
    sample_rate = int(cache.meta["settings"]["sample_rate"])
    width = cache.clip_samples
    clip_s = width / sample_rate
    if not hours > 0:
        raise ConfigError(f"--hours {hours}: must be more than 0")
    if spacing_s < clip_s + min_gap_s:
        raise ConfigError(
            f"spacing {spacing_s} s leaves no room for a {clip_s:g} s clip and a {min_gap_s} s gap"
        )
    waves, labels = cache.split(split)
    classes = cache.classes
    usable = np.array([i for i, label in enumerate(labels) if classes[label] != SILENCE], dtype=np.int64)
    levels = np.array([_rms(as_float32(waves[i])) for i in usable]) if usable.size else np.zeros(0)
    usable, levels = usable[levels > 0], levels[levels > 0]  # a digitally silent clip has no level to set
    if usable.size == 0:
        raise DataError(
            f"{cache.path}: the {split} split has no word clips to place; use another dataset or split"
        )
    noise_files = [np.asarray(n, dtype=np.float32) for n in cache.noise()]
    noise_levels = [float(_rms(n)) for n in noise_files]
    if not noise_files or min(noise_levels) == 0:
        raise DataError(f"{cache.path}: no background noise to build streams on; pass --noise-dir")

    rng = np.random.default_rng(seed)
    total = round(hours * 3600 * sample_rate)
    speech_rms = float(np.median(levels))
    noise_rms = speech_rms / 10 ** (snr_db / 20)
    noise = [n * np.float32(noise_rms / level) for n, level in zip(noise_files, noise_levels, strict=True)]

    slot, gap = round(spacing_s * sample_rate), round(min_gap_s * sample_rate)
    slots = total // slot
    order = np.concatenate([rng.permutation(usable.size) for _ in range(-(-slots // usable.size))])[:slots]
    room = slot - width - gap  # start positions inside a slot that keep gap / 2 on both sides
    starts = np.arange(slots, dtype=np.int64) * slot + gap // 2 + rng.integers(0, room + 1, size=slots)
    rows = usable[order]
    gains = (speech_rms / levels[order]).astype(np.float32)

    fade = round(FADE_S * sample_rate)
    length = min(round(segment_s * sample_rate), min(len(n) for n in noise) - fade)
    if length < sample_rate:
        raise DataError(f"{cache.path}: the background noise files are shorter than 1 s; use longer ones")
    segments = -(-total // length)
    files = rng.integers(0, len(noise), size=segments)
    offsets = np.array([rng.integers(0, len(noise[f]) - length - fade + 1) for f in files], dtype=np.int64)

    truth = [
        Occurrence(float(s / sample_rate), float((s + width) / sample_rate), classes[labels[r]])
        for s, r in zip(starts, rows, strict=True)
    ]
    return SyntheticStream(
        sample_rate=sample_rate,
        total_samples=total,
        clips=waves,
        starts=starts,
        rows=rows,
        gains=gains,
        noise=noise,
        segment_files=files,
        segment_offsets=offsets,
        segment_samples=length,
        fade_samples=fade,
        truth=truth,
        settings={
            "split": split,
            "hours": hours,
            "snr_db": snr_db,
            "seed": seed,
            "spacing_s": spacing_s,
            "min_gap_s": min_gap_s,
            "segment_s": length / sample_rate,
            "speech_rms": speech_rms,
            "noise_rms": noise_rms,
            "clips_available": int(usable.size),
            "clips_placed": int(slots),
        },
    )
