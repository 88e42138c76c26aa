"""Frozen, torch-free descriptions passed down the stack: the features a model takes, the dataset a job reads.

Built once (from CLI options or a YAML mapping) and handed down whole, so that the data pipeline, the runner,
the report and streaming evaluation all see one description instead of seven options threaded by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kwsbench.errors import ConfigError


@dataclass(frozen=True)
class InputSpec:
    """The features a model expects: ``kind`` is ``"logmel"`` or ``"mfcc"``; shape ``(B, 1, n_features, frames)``."""

    kind: str
    n_features: int
    frames: int
    window_ms: float = 30.0
    hop_ms: float = 10.0
    note: str = ""
    # Mel filterbank of the frontend; None: as many mel bins as features (log-mel) or max(40, n) (MFCC).
    n_mels: int | None = None
    f_min: float = 0.0
    f_max: float | None = None

    def shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, 1, self.n_features, self.frames)


def _keywords(value: str | Sequence[str] | None, where: str) -> tuple[str, ...] | None:
    """Keywords as a tuple: a comma-separated string (the CLI's ``--keywords a,b``) is split."""
    if value is None:
        return None
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, Sequence) and all(isinstance(k, str) for k in value):
        items = list(value)
    else:
        raise ConfigError(f"{where}keywords: expected a list of words or 'a,b,c', got {value!r}")
    items = [k.strip() for k in items if k.strip()]
    return tuple(items) or None


def _path(value: str | Path | None, key: str, where: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or not str(value):
        raise ConfigError(f"{where}{key}: expected a folder path, got {value!r}")
    return Path(value).expanduser()


def _optional_str(value: object, key: str, where: str) -> str | None:
    if value is None:
        return None
    # YAML reads `protocol: 12` as an int; a protocol or version is a name, so numbers are taken as text.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"{where}{key}: expected a name, got {value!r}")
    return str(value)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset as a job reads it: which layout (``dataset``), where (``data_dir``), under which protocol.

    ``data_dir`` None is the layout's default folder, for layouts that generate their data (``synthetic``);
    the others need one and say so when the dataset is loaded.

    ``protocol`` None is the layout's default; ``keywords`` None is the layout's default set; ``noise_dir``
    adds background noise (silence crops and augmentation); ``version`` is Speech Commands' v1/v2 (None:
    detected); ``skip_bad`` counts and lists unreadable files instead of stopping at the first.
    """

    dataset: str
    data_dir: Path | None = None
    protocol: str | None = None
    keywords: tuple[str, ...] | None = None
    noise_dir: Path | None = None
    version: str | None = None
    skip_bad: bool = False
    fractions: tuple[float, float, float] = field(default=(0.8, 0.1, 0.1))

    @classmethod
    def create(
        cls,
        dataset: str,
        data_dir: str | Path | None = None,
        *,
        protocol: str | int | None = None,
        keywords: str | Sequence[str] | None = None,
        noise_dir: str | Path | None = None,
        version: str | None = None,
        skip_bad: bool = False,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        where: str = "",
    ) -> DatasetSpec:
        """Normalise loose values (CLI strings, YAML scalars) into a spec; ``where`` prefixes error messages."""
        if not isinstance(dataset, str) or not dataset:
            raise ConfigError(f"{where}dataset: expected a dataset name, got {dataset!r}")
        data = _path(data_dir, "data_dir", where)
        if not isinstance(skip_bad, bool):
            raise ConfigError(f"{where}skip_bad: expected true or false, got {skip_bad!r}")
        if (
            isinstance(fractions, (str, bytes))
            or not isinstance(fractions, Sequence)
            or len(fractions) != 3
            or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in fractions)
        ):
            raise ConfigError(
                f"{where}fractions: expected three numbers (train, validation, test), got {fractions!r}"
            )
        return cls(
            dataset=dataset,
            data_dir=data,
            protocol=_optional_str(protocol, "protocol", where),
            keywords=_keywords(keywords, where),
            noise_dir=_path(noise_dir, "noise_dir", where),
            version=_optional_str(version, "version", where),
            skip_bad=skip_bad,
            fractions=tuple(float(f) for f in fractions),  # type: ignore[arg-type]
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, object], where: str = "") -> DatasetSpec:
        """A spec from a YAML/JSON mapping; an unknown key is refused with one line naming it."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}dataset: expected a mapping of dataset options, got {values!r}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in known]
        if unknown:
            raise ConfigError(f"{where}unknown dataset key {unknown[0]!r}; the keys are: {', '.join(known)}")
        if "dataset" not in values:
            raise ConfigError(f"{where}dataset: required in the dataset section")
        rest = {k: v for k, v in values.items() if k not in ("dataset", "data_dir")}
        return cls.create(values["dataset"], values.get("data_dir"), where=where, **rest)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        """Plain JSON types, for records and YAML: ``from_dict(to_dict())`` gives the spec back."""
        return {
            "dataset": self.dataset,
            "data_dir": str(self.data_dir) if self.data_dir is not None else None,
            "protocol": self.protocol,
            "keywords": list(self.keywords) if self.keywords is not None else None,
            "noise_dir": str(self.noise_dir) if self.noise_dir is not None else None,
            "version": self.version,
            "skip_bad": self.skip_bad,
            "fractions": list(self.fractions),
        }

    def replace(self, **changes) -> DatasetSpec:
        """A copy with some fields changed (e.g. the protocol a layout resolved)."""
        return dataclasses.replace(self, **changes)
