"""`kwsbench data summary`: class x split counts, speakers, duplicates, skipped files and how silence was made."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kwsbench.data.datasets import load_dataset
from kwsbench.data.duplicates import redundant_copies
from kwsbench.data.records import SPLITS, DatasetIndex

_MAX_SKIPPED_LINES = 10


@dataclass
class DatasetSummary:
    """What ``summarize`` found; ``to_dict`` is the ``--json`` output."""

    dataset: str
    data_dir: str
    protocol: str
    version: str | None
    classes: list[str]
    splits: dict[str, dict[str, int]]
    total: int
    word_clips: dict[str, int]
    silence: dict[str, object]
    duplicates: int
    duplicate_groups: int
    skipped: list[dict[str, str]]
    speakers: dict[str, int]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def summary_of(index: DatasetIndex) -> DatasetSummary:
    """Count a resolved dataset: clips per split and class, distinct speakers per split."""
    counts = Counter((c.split, c.label) for c in index.clips)
    speakers = {s: len({c.speaker for c in index.clips if c.split == s and c.speaker}) for s in SPLITS}
    return DatasetSummary(
        dataset=index.name,
        data_dir=str(index.root),
        protocol=index.protocol,
        version=index.version,
        classes=list(index.classes),
        splits={s: {k: counts[s, k] for k in index.classes} for s in SPLITS},
        total=len(index.clips),
        word_clips=dict(index.word_clips),
        silence=dict(index.silence),
        duplicates=redundant_copies(index.duplicate_groups),
        duplicate_groups=len(index.duplicate_groups),
        skipped=[{"path": s.path, "reason": s.reason} for s in index.skipped],
        speakers=speakers,
        notes=list(index.notes),
    )


def summarize(
    dataset: str,
    data_dir: Path | str,
    protocol: str | None = None,
    keywords: list[str] | str | None = None,
    noise_dir: Path | str | None = None,
    skip_bad: bool = False,
    version: str | None = None,
) -> DatasetSummary:
    """Load ``dataset`` under ``data_dir`` (see ``load_dataset``) and count it."""
    index = load_dataset(
        dataset,
        data_dir,
        protocol=protocol,
        keywords=keywords,
        noise_dir=noise_dir,
        version=version,
        skip_bad=skip_bad,
    )
    return summary_of(index)


def format_summary(summary: DatasetSummary) -> str:
    """A readable class x split table with totals, then duplicates, skipped files, silence and notes."""
    width = max([len(c) for c in summary.classes] + [len("word clips")]) + 2
    header = f"{'class':<{width}}" + "".join(f"{s:>12}" for s in SPLITS) + f"{'total':>12}"
    lines = [
        f"{summary.dataset} at {summary.data_dir}: protocol {summary.protocol}"
        + (f", version {summary.version}" if summary.version else ""),
        "",
        header,
        "-" * len(header),
    ]
    for label in summary.classes:
        row = [summary.splits[s][label] for s in SPLITS]
        lines.append(f"{label:<{width}}" + "".join(f"{n:>12,}" for n in row) + f"{sum(row):>12,}")
    totals = [sum(summary.splits[s].values()) for s in SPLITS]
    lines += [
        "-" * len(header),
        f"{'total':<{width}}" + "".join(f"{n:>12,}" for n in totals) + f"{summary.total:>12,}",
    ]
    lines.append(f"{'speakers':<{width}}" + "".join(f"{summary.speakers[s]:>12,}" for s in SPLITS))
    if any(summary.word_clips.values()):
        lines.append(
            f"{'word clips':<{width}}" + "".join(f"{summary.word_clips.get(s, 0):>12,}" for s in SPLITS)
        )
    lines += ["", f"duplicates: {summary.duplicates} redundant copies in {summary.duplicate_groups} groups"]
    if summary.silence:
        lines.append("silence: " + "; ".join(f"{k} {v}" for k, v in summary.silence.items()))
    lines.append(f"skipped: {len(summary.skipped)} files")
    for item in summary.skipped[:_MAX_SKIPPED_LINES]:
        lines.append(f"  {item['path']}: {item['reason']}")
    if len(summary.skipped) > _MAX_SKIPPED_LINES:
        lines.append(f"  ... and {len(summary.skipped) - _MAX_SKIPPED_LINES} more (see --json)")
    lines += [f"note: {n}" for n in summary.notes]
    return "\n".join(lines)
