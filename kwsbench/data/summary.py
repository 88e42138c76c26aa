"""`kwsbench data summary`: class x split counts, speakers, duplicates, skipped files and how silence was made."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from kwsbench.data.datasets import load_dataset
from kwsbench.data.duplicates import redundant_copies
from kwsbench.data.records import SPLITS, DatasetIndex, printable, printable_tree
from kwsbench.specs import DatasetSpec

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
        """Plain JSON types; names that are not UTF-8 appear escaped (``caf\\xe9``), so any output prints."""
        return printable_tree(asdict(self))  # type: ignore[return-value]


def summary_of(index: DatasetIndex) -> DatasetSummary:
    """Count a resolved dataset: clips per split and class, distinct speakers per split."""
    counts = Counter((c.split, c.label) for c in index.clips)
    speakers = {s: len({c.speaker for c in index.clips if c.split == s and c.speaker}) for s in SPLITS}
    return DatasetSummary(
        dataset=index.name,
        data_dir=printable(index.root),
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


def summarize(spec: DatasetSpec) -> DatasetSummary:
    """Load the dataset ``spec`` describes (see ``load_dataset``) and count it."""
    return summary_of(load_dataset(spec))


def format_summary(summary: DatasetSummary) -> str:
    """A readable class x split table with totals, then duplicates, skipped files, silence and notes."""
    summary = DatasetSummary(**summary.to_dict())  # escaped names: the text prints on any terminal
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
