"""The versioned record schema: counts, latency, training speed, trials and stream evaluations as plain data.

Every record serialises to one JSON object carrying its ``kind`` and ``schema_version``; ``record_from_dict``
reads it back and refuses a record from a newer schema or with keys it does not know, so figures are never
read silently under the wrong meaning. Imports neither torch nor numpy (a report runs without them).

Schema history: version 1 (this one).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kwsbench.errors import KwsbenchError
from kwsbench.typecheck import fits

SCHEMA_VERSION = 1


class RecordError(KwsbenchError):
    """A results file or record that cannot be read as this schema."""


@dataclass
class Record:
    """Base of every record kind: ``to_dict`` adds ``kind`` and ``schema_version``."""

    KIND: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.KIND, "schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "") -> Record:
        """The record of this kind in ``values``; ``where`` (e.g. ``results.jsonl:3``) prefixes errors."""
        data = dict(values)
        kind = data.pop("kind", cls.KIND)
        if kind != cls.KIND:
            raise RecordError(f"{where}a {kind!r} record where a {cls.KIND!r} record was expected")
        _check_version(data.pop("schema_version", None), where)
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise RecordError(
                f"{where}{cls.KIND} record has unknown field {unknown[0]!r}; is it from another tool?"
            )
        missing = [
            n
            for n, f in names.items()
            if n not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise RecordError(f"{where}{cls.KIND} record lacks field {missing[0]!r}")
        hints = typing.get_type_hints(cls)
        for name, value in data.items():
            if not fits(value, hints[name], finite=False):
                raise RecordError(f"{where}{cls.KIND} record field {name!r}: {value!r} is not {hints[name]}")
        return cls(**data)


def _check_version(version: object, where: str) -> None:
    if not isinstance(version, int) or isinstance(version, bool):
        raise RecordError(f"{where}record without an integer schema_version; not a kwsbench record")
    if version > SCHEMA_VERSION:
        raise RecordError(
            f"{where}record has schema_version {version}, newer than this kwsbench's {SCHEMA_VERSION}; "
            "upgrade kwsbench to read it"
        )


@dataclass
class CountsRecord(Record):
    """A model's measured parameters and MACs beside the figures its paper declared (``kwsbench models``)."""

    KIND: ClassVar[str] = "counts"

    name: str
    family: str
    num_classes: int
    params: int
    macs_total: int | None
    macs_conv: int | None
    input: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    macs_by_operator: dict[str, Any] = field(default_factory=dict)
    macs_skipped_ops: dict[str, Any] = field(default_factory=dict)
    macs_counting: str = ""
    declared: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    citation: str = ""


@dataclass
class LatencyRecord(Record):
    """One (model, backend) latency figure under a protocol; timings are None unless ``status`` is ``"ok"``."""

    KIND: ClassVar[str] = "latency"

    name: str
    backend: str
    threads: int
    batch: int
    timed: str
    median_ms: float | None = None
    p90_ms: float | None = None
    iqr_ms: float | None = None
    mean_ms: float | None = None
    min_ms: float | None = None
    n: int = 0
    max_abs_diff: float | None = None
    ratio_to_eager: float | None = None
    status: str = "ok"
    note: str = ""
    protocol: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainSpeedRecord(Record):
    """Training throughput of one formulation (``"eager"``: straightforward, ``"fast"``: reformulated)."""

    KIND: ClassVar[str] = "train_speed"

    name: str
    formulation: str
    batch: int
    threads: int
    samples_per_s: float
    step_ms_median: float
    step_ms_p90: float
    steps: int
    warmup: int
    protocol: str
    protocol_version: str
    speedup_vs_eager: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def fast(self) -> bool:
        return self.formulation == "fast"


@dataclass
class TrialRecord(Record):
    """One trained and measured model of an experiment grid; ``status`` is ``"ok"`` or ``"failed"``.

    ``trial_id`` hashes the resolved config (model, options, recipe, dataset, seed); ``metrics`` holds the
    best-validation and final-epoch accuracies; ``latency`` is a list of ``LatencyRecord`` dicts.
    """

    KIND: ClassVar[str] = "trial"

    trial_id: str
    experiment: str
    model: str
    seed: int
    status: str
    options: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    params: int | None = None
    macs_total: int | None = None
    macs_conv: int | None = None
    latency: list[dict[str, Any]] = field(default_factory=list)
    train_samples_per_s: float | None = None
    wall_time_s: float | None = None
    checkpoint: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    git_commit: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    traceback: str | None = None
    # Streaming detection when the experiment asks for it: hours, snr_db, occurrences and the false-rejection
    # rate at each false-alarm target, overall and per keyword (the summary of a StreamEvalRecord).
    stream_eval: dict[str, Any] = field(default_factory=dict)


@dataclass
class StreamEvalRecord(Record):
    """Streaming detection on long audio: false alarms per hour and false rejections at each threshold.

    ``threshold`` .. ``false_rejection_rate``: the operating point at 1 FA/h; ``operating_points``: one per
    FA/h target (``target_false_alarms_per_hour``, ``threshold``, ``false_alarms``, ``false_alarms_per_hour``,
    ``false_rejection_rate``, ``per_keyword``); ``occurrences``: keyword -> count in the truth;
    ``distractors``: other words in it; ``det``: the DET curve (``thresholds``, ``false_alarms_per_hour``,
    ``false_rejection_rate``, ``per_keyword``); ``timing``: hops, audio and scoring seconds, real-time factor.
    The last four fields were added with defaults: records written before them still read.
    """

    KIND: ClassVar[str] = "stream_eval"

    model: str
    checkpoint: str | None
    keywords: list[str]
    hours: float
    dataset: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    false_alarms: int | None = None
    false_alarms_per_hour: float | None = None
    false_rejection_rate: float | None = None
    operating_points: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    occurrences: dict[str, int] = field(default_factory=dict)
    distractors: int | None = None
    det: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)


KINDS: dict[str, type[Record]] = {
    cls.KIND: cls for cls in (CountsRecord, LatencyRecord, TrainSpeedRecord, TrialRecord, StreamEvalRecord)
}


def record_from_dict(values: Mapping[str, Any], where: str = "") -> Record:
    """Any record from its JSON object, dispatched on ``kind``."""
    if not isinstance(values, Mapping):
        raise RecordError(f"{where}expected a JSON object, got {type(values).__name__}")
    kind = values.get("kind")
    if kind not in KINDS:
        raise RecordError(f"{where}unknown record kind {kind!r}; the kinds are: {', '.join(KINDS)}")
    return KINDS[kind].from_dict(values, where)
