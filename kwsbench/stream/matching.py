"""Detections against the true timeline: hits, false alarms, and the false-rejection rate at a fixed number of
false alarms per hour, swept over thresholds.

Matching rule (``match``), detections taken in time order: a detection of keyword ``k`` at ``t`` is a hit
when an occurrence of ``k`` with ``start_s <= t <= end_s + tolerance_s`` has not been hit yet (the earliest
such occurrence is taken). Anything else is a false alarm: a second detection of an occurrence, a wrong
keyword, or a detection in no occurrence. ``t`` is the end of the detector's window, so a keyword is heard
after it starts; the tolerance covers the window still holding it after its end, plus the smoothing delay.

Rates: FA/h = false alarms / hours of audio; FRR = missed occurrences / occurrences. Per keyword, a false
alarm counts against the keyword that was detected, and FRR over that keyword's occurrences. Occurrences of
words the model does not detect (``_unknown_`` clips, other words in a label file) are never hit: they are
there to be falsely detected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kwsbench.stream.detector import DetectorSettings, fire


@dataclass(frozen=True)
class Occurrence:
    """A word in the true timeline, in seconds from the start of the stream."""

    start_s: float
    end_s: float
    keyword: str


def match(
    times: Sequence[float], keywords: Sequence[str], truth: Sequence[Occurrence], tolerance_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(hit (len(truth),) bool, false_alarm (len(times),) bool)`` for detections ``(times, keywords)``."""
    order = sorted(range(len(truth)), key=lambda i: truth[i].start_s)
    starts = np.array([truth[i].start_s for i in order], dtype=np.float64)
    longest = max((o.end_s - o.start_s for o in truth), default=0.0)
    hit = np.zeros(len(truth), dtype=bool)
    false_alarm = np.zeros(len(times), dtype=bool)
    for d in sorted(range(len(times)), key=lambda i: times[i]):
        t, keyword = times[d], keywords[d]
        # Occurrences that start at or before t, back to the earliest whose end could still reach t.
        high = int(np.searchsorted(starts, t, side="right"))
        low = int(np.searchsorted(starts, t - longest - tolerance_s, side="left"))
        for j in range(low, high):
            o = truth[order[j]]
            if not hit[order[j]] and o.keyword == keyword and t <= o.end_s + tolerance_s:
                hit[order[j]] = True
                break
        else:
            false_alarm[d] = True
    return hit, false_alarm


@dataclass(frozen=True)
class SweepPoint:
    """Counts at one threshold; ``*_by_keyword`` are keyed by the model's keywords."""

    threshold: float
    detections: int
    false_alarms: int
    missed: int
    false_alarms_by_keyword: dict[str, int]
    missed_by_keyword: dict[str, int]


def sweep(
    scores: np.ndarray,
    keyword_of_hop: Sequence[str],
    truth: Sequence[Occurrence],
    keywords: Sequence[str],
    settings: DetectorSettings,
    thresholds: Sequence[float],
    tolerance_s: float,
) -> list[SweepPoint]:
    """Detections at every threshold from the best smoothed keyword score per hop, matched to ``truth``.

    ``scores`` ``(hops,)`` and ``keyword_of_hop`` (the best keyword at each hop) come from
    ``detector.smoothed_best``; each threshold runs the detector's own firing rule (``detector.fire``).
    """
    targets = [o.keyword in keywords for o in truth]
    points = []
    for threshold in thresholds:
        hops = fire(scores, float(threshold), settings.refractory_hops)
        times = [float(t) for t in settings.hop_time(np.array(hops, dtype=np.int64))]
        detected = [keyword_of_hop[h] for h in hops]
        hit, false_alarm = match(times, detected, truth, tolerance_s)
        fa_by = dict.fromkeys(keywords, 0)
        for keyword, wrong in zip(detected, false_alarm, strict=True):
            fa_by[keyword] += int(wrong)
        missed_by = dict.fromkeys(keywords, 0)
        for o, target, found in zip(truth, targets, hit, strict=True):
            if target and not found:
                missed_by[o.keyword] += 1
        points.append(
            SweepPoint(
                float(threshold), len(hops), int(false_alarm.sum()), sum(missed_by.values()), fa_by, missed_by
            )
        )
    return points


def occurrences_by_keyword(truth: Sequence[Occurrence], keywords: Sequence[str]) -> dict[str, int]:
    """How many times each of ``keywords`` occurs in ``truth``."""
    counts = dict.fromkeys(keywords, 0)
    for o in truth:
        if o.keyword in counts:
            counts[o.keyword] += 1
    return counts


def operating_point(
    points: Sequence[SweepPoint],
    hours: float,
    target_fa_per_hour: float,
    occurrences: int,
    keyword: str | None = None,
) -> dict:
    """The lowest FRR among thresholds with at most ``target_fa_per_hour`` false alarms per hour.

    ``keyword`` None: all keywords together; else that keyword's false alarms and occurrences. Ties go to
    fewer false alarms, then to the higher threshold. When no swept threshold is that strict, the answer is a
    threshold above every score: no detection, FRR 1 (``threshold`` None).
    """

    def counts(p: SweepPoint) -> tuple[int, int]:
        if keyword is None:
            return p.false_alarms, p.missed
        return p.false_alarms_by_keyword[keyword], p.missed_by_keyword[keyword]

    allowed = [p for p in points if counts(p)[0] <= target_fa_per_hour * hours]
    result = {"target_false_alarms_per_hour": target_fa_per_hour, "threshold": None, "false_alarms": 0}
    result["false_alarms_per_hour"] = 0.0
    result["false_rejection_rate"] = 1.0 if occurrences else None
    if allowed:
        best = min(allowed, key=lambda p: (counts(p)[1], counts(p)[0], -p.threshold))
        false_alarms, missed = counts(best)
        result.update(
            threshold=best.threshold,
            false_alarms=false_alarms,
            false_alarms_per_hour=false_alarms / hours,
            false_rejection_rate=missed / occurrences if occurrences else None,
        )
    return result
