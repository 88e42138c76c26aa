"""``kwsbench stream-eval``: the streaming detector on long audio with a known timeline, judged in false
rejections at 0.5, 1 and 2 false alarms per hour.

Every hop of the stream is scored once, in batches (an hour at a 100 ms hop is 36,000 windows), with the
same windows ``listen`` scores one at a time; smoothing, thresholds and the refractory period then run on
the score matrix for every threshold of the sweep (``THRESHOLDS``), and the detections of each threshold
are matched to the truth (:mod:`kwsbench.stream.matching`). The result is a torch-free ``stream_eval``
record with the operating points, the DET curve and how long scoring took.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from kwsbench.errors import ConfigError
from kwsbench.results.schema import StreamEvalRecord
from kwsbench.stream.detector import (
    DetectorSettings,
    MovingAverage,
    keyword_columns,
    score_stream,
    smoothed_best,
)
from kwsbench.stream.matching import Occurrence, SweepPoint, occurrences_by_keyword, operating_point, sweep
from kwsbench.stream.scorer import Scorer

TARGETS_FA_PER_HOUR: tuple[float, ...] = (0.5, 1.0, 2.0)
DEFAULT_TOLERANCE_S = 0.5
# Thresholds evenly spaced in log-odds from 0.12 to 1 - 4e-11: the operating points of interest sit where
# posteriors are within 1e-3 .. 1e-9 of 1, which a linear grid would skip.
THRESHOLDS: tuple[float, ...] = tuple(
    float(1 / (1 + np.exp(-u))) for u in np.arange(-2.0, 24.0 + 1e-9, 0.125)
)


def evaluate_stream(
    scorer: Scorer,
    chunks: Iterable[np.ndarray],
    truth: Sequence[Occurrence],
    settings: DetectorSettings,
    *,
    total_samples: int | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    batch: int = 16,
    thresholds: Sequence[float] = THRESHOLDS,
    dataset: dict | None = None,
    progress: bool = True,
) -> StreamEvalRecord:
    """Score the stream ``chunks`` (float32 mono at the scorer's rate), sweep thresholds, build the record."""
    if tolerance_s < 0:
        raise ConfigError(f"--tolerance-ms {tolerance_s * 1000:g}: must be 0 or more")
    settings = settings.for_scorer(scorer)  # a streaming model's detections dated by the window they scored
    start = time.perf_counter()
    logits = score_stream(
        chunks, scorer, settings, batch=batch, total_samples=total_samples, progress=progress
    )
    scoring_s = time.perf_counter() - start
    hops = logits.shape[0]
    seconds = hops * settings.hop_samples / settings.sample_rate
    if hops == 0:
        raise ConfigError("the stream is shorter than one hop; give it at least a second of audio")
    hours = seconds / 3600
    labels = list(scorer.labels)
    columns = keyword_columns(labels)
    keywords = [labels[c] for c in columns]
    scores, best = smoothed_best(logits, columns, MovingAverage(settings.smooth_hops, len(labels)))
    keyword_of_hop = [labels[c] for c in best]
    points = sweep(scores, keyword_of_hop, truth, keywords, settings, thresholds, tolerance_s)
    occurrences = occurrences_by_keyword(truth, keywords)
    total = sum(occurrences.values())
    operating = []
    for target in TARGETS_FA_PER_HOUR:
        overall = operating_point(points, hours, target, total)
        overall["per_keyword"] = {
            k: operating_point(points, hours, target, occurrences[k], keyword=k) for k in keywords
        }
        operating.append(overall)
    headline = next(p for p in operating if p["target_false_alarms_per_hour"] == 1.0)
    from kwsbench.measure.provenance import collect_provenance

    return StreamEvalRecord(
        model=scorer.name,
        checkpoint=scorer.source,
        keywords=keywords,
        hours=hours,
        dataset=dict(dataset or {}),
        threshold=headline["threshold"],
        false_alarms=headline["false_alarms"],
        false_alarms_per_hour=headline["false_alarms_per_hour"],
        false_rejection_rate=headline["false_rejection_rate"],
        operating_points=operating,
        settings={
            **{k: v for k, v in settings.to_dict().items() if k != "threshold"},  # swept, not set
            "tolerance_s": tolerance_s,
            "matching": "start_s <= t <= end_s + tolerance_s, t = end of the window; one hit per occurrence",
            "scorer": scorer.note,
            "batch": batch,
        },
        provenance=collect_provenance(getattr(scorer, "threads", 1)),
        occurrences=occurrences,
        distractors=sum(1 for o in truth if o.keyword not in occurrences),
        det=_det(points, keywords, hours, occurrences),
        timing={
            "hops": hops,
            "audio_s": seconds,
            "scoring_s": round(scoring_s, 3),
            "real_time_factor": scoring_s / seconds,
            "wall_s": round(time.perf_counter() - start, 3),
        },
    )


def _det(
    points: Sequence[SweepPoint], keywords: list[str], hours: float, occurrences: dict[str, int]
) -> dict:
    """The DET curve: FA/h and FRR per threshold, overall and per keyword (FRR None without occurrences)."""
    total = sum(occurrences.values())

    def rate(missed: int, count: int) -> float | None:
        return missed / count if count else None

    return {
        "thresholds": [p.threshold for p in points],
        "false_alarms_per_hour": [p.false_alarms / hours for p in points],
        "false_rejection_rate": [rate(p.missed, total) for p in points],
        "per_keyword": {
            k: {
                "false_alarms_per_hour": [p.false_alarms_by_keyword[k] / hours for p in points],
                "false_rejection_rate": [rate(p.missed_by_keyword[k], occurrences[k]) for p in points],
            }
            for k in keywords
        },
    }


def evaluate_synthetic(
    scorer: Scorer,
    spec,
    settings: DetectorSettings,
    *,
    hours: float = 1.0,
    snr_db: float = 10.0,
    seed: int = 0,
    split: str = "test",
    cache_dir: str | os.PathLike | None = None,
    save_stream: str | os.PathLike | None = None,
    **options,
) -> StreamEvalRecord:
    """Streams built from ``split`` of the dataset ``spec`` (a ``DatasetSpec``) over its noise, evaluated.

    ``save_stream``: a folder to also write ``stream.wav`` and ``stream_labels.txt`` into (for ``listen``).
    ``options`` go to :func:`evaluate_stream`.
    """
    from kwsbench.runner.loop import open_cache
    from kwsbench.stream.compose import build_synthetic_stream

    if not hours > 0:  # before a cache build that may take minutes
        raise ConfigError(f"--hours {hours}: must be more than 0")
    cache = open_cache(spec, cache_dir=cache_dir, progress=options.get("progress", True))
    stream = build_synthetic_stream(cache, hours=hours, snr_db=snr_db, seed=seed, split=split)
    if save_stream is not None:
        stream.save(Path(save_stream) / "stream.wav", Path(save_stream) / "stream_labels.txt")
    dataset = {**spec.to_dict(), **stream.settings}
    return evaluate_stream(
        scorer,
        stream.chunks(),
        stream.truth,
        settings,
        total_samples=stream.total_samples,
        dataset=dataset,
        **options,
    )


def evaluate_recording(
    scorer: Scorer,
    recording: str | os.PathLike,
    truth: Sequence[Occurrence],
    settings: DetectorSettings,
    *,
    labels_name: str = "",
    **options,
) -> StreamEvalRecord:
    """A real recording (anything FFmpeg decodes) against its label file's ``truth`` (``labels.read_labels``)."""
    from kwsbench.stream.sources import decode_file

    audio = decode_file(recording, scorer.sample_rate)
    dataset = {"recording": str(recording), "labels": labels_name, "words": len(truth)}
    return evaluate_stream(
        scorer, [audio], truth, settings, total_samples=audio.size, dataset=dataset, **options
    )


def save_stream_eval(record: StreamEvalRecord, out_dir: str | os.PathLike) -> tuple[Path, Path | None]:
    """Write ``stream_eval.json`` (the record, atomically) and ``det.png`` into ``out_dir``; returns both
    paths (the PNG None when no threshold had a false alarm, so there is no curve on a log axis)."""
    from kwsbench.results.store import write_json
    from kwsbench.stream.plot import det_figure

    out = Path(out_dir)
    write_json(out / "stream_eval.json", [record])
    return out / "stream_eval.json", det_figure(record, out / "det.png")


def format_stream_eval(record: StreamEvalRecord) -> str:
    """The FRR at each FA/h target per keyword and overall, as aligned text."""
    targets = [p["target_false_alarms_per_hour"] for p in record.operating_points]
    width = max([len(k) for k in record.keywords] + [8]) + 2

    def cell(point: dict) -> str:
        frr = point["false_rejection_rate"]
        return "-" if frr is None else f"{frr * 100:.1f} %"

    timing = record.timing
    lines = [
        f"{record.model} ({record.checkpoint}): {record.hours:.2f} h of audio, "
        f"{sum(record.occurrences.values())} keyword occurrences, {record.distractors} other words",
        f"scored {timing.get('hops', 0):,} hops in {timing.get('scoring_s', 0):.1f} s "
        f"(real-time factor {timing.get('real_time_factor', 0):.5f}) on {record.settings.get('scorer', '')}",
        "",
        f"{'keyword':<{width}}{'count':>6}" + "".join(f"{f'FRR@{t:g} FA/h':>15}" for t in targets),
    ]
    for k in record.keywords:
        row = "".join(f"{cell(p['per_keyword'][k]):>15}" for p in record.operating_points)
        lines.append(f"{k:<{width}}{record.occurrences.get(k, 0):>6}{row}")
    row = "".join(f"{cell(p):>15}" for p in record.operating_points)
    lines.append(f"{'all':<{width}}{sum(record.occurrences.values()):>6}{row}")
    thresholds = ", ".join(
        f"{p['target_false_alarms_per_hour']:g} FA/h: "
        + ("none fires" if p["threshold"] is None else f"{p['threshold']:.6g}")
        for p in record.operating_points
    )
    lines += ["", f"overall thresholds: {thresholds}"]
    lines.append(
        f"a detection counts within {record.settings.get('tolerance_s', 0):g} s after a keyword's end "
        "(time = end of the 1 s window); per keyword: FA counted against the keyword detected"
    )
    return "\n".join(lines)
