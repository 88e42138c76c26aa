"""``kwsbench listen``: a source's chunks through the streaming detector, detections handed on as they happen.

Ends at the end of the source or on Ctrl-C (a clean stop, not an error); the summary carries the real-time
factor: the time spent on hops (window, log-mel, model, smoothing, threshold) over the seconds of audio heard.
Decoding is not counted: from a live device it is waiting, from a file it is FFmpeg's, not the detector's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from kwsbench.stream.detector import Detection, StreamingDetector


@dataclass
class ListenSummary:
    """What a ``listen`` run heard and what it cost."""

    source: str
    audio_s: float
    hops: int
    detections: int
    processing_s: float
    interrupted: bool
    scorer: str
    hop_ms: float

    @property
    def real_time_factor(self) -> float:
        return self.processing_s / self.audio_s if self.audio_s else 0.0

    @property
    def per_hop_ms(self) -> float:
        return 1000 * self.processing_s / self.hops if self.hops else 0.0

    def describe(self) -> str:
        """One line: how it ended, audio, hops, detections, the real-time factor and the per-hop cost."""
        ending = "stopped by Ctrl-C" if self.interrupted else "end of input"
        return (
            f"{ending}: {self.audio_s:.1f} s of audio from {self.source}, {self.hops} hops, "
            f"{self.detections} detections; real-time factor {self.real_time_factor:.4f} "
            f"({self.per_hop_ms:.3f} ms per {self.hop_ms:g} ms hop on {self.scorer})"
        )


def listen(
    chunks: Iterable[np.ndarray],
    detector: StreamingDetector,
    on_detection: Callable[[Detection], None],
    *,
    source: str = "",
) -> ListenSummary:
    """Feed ``chunks`` (float32 mono at the detector's rate) to ``detector``; call ``on_detection`` for each hit."""
    count, interrupted = 0, False
    try:
        for chunk in chunks:
            for detection in detector.push(chunk):
                count += 1
                on_detection(detection)
    except KeyboardInterrupt:
        interrupted = True
    return ListenSummary(
        source=source,
        audio_s=detector.audio_s,
        hops=detector.hops,
        detections=count,
        processing_s=detector.processing_s,
        interrupted=interrupted,
        scorer=detector.scorer.note,
        hop_ms=detector.settings.hop_ms,
    )
