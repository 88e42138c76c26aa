"""The one interface every dataset layout implements, so that ``datasets.load_dataset`` treats them alike.

A layout knows how one kind of folder is organised (Speech Commands' training archive, its test-set
archive, one folder per label, FSDD) and turns it into a ``DatasetPlan``; everything after that (header
checks, duplicates, balancing) is shared. A new layout is a new module with an object of this shape (a
``Layout`` of its functions) plus one line in ``datasets.DATASETS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from kwsbench.data.splits import DatasetPlan
    from kwsbench.specs import DatasetSpec


@runtime_checkable
class DatasetLayout(Protocol):
    """A dataset layout: its registry ``name``, the ``protocols`` it supports (the default first), a
    ``protocol_hint`` added when a user asks for another one ("" for none), how to get the data
    (``missing_fix``), how to read it (``build``) and, for generated data, where it is by default
    (``default_root``)."""

    name: str
    protocols: tuple[str, ...]
    protocol_hint: str

    def missing_fix(self, root: Path) -> str:
        """How to get this dataset into ``root`` (ends the "no such folder" message)."""
        ...

    def build(self, spec: DatasetSpec, root: Path, protocol: str) -> DatasetPlan:
        """Read ``root`` (``spec.data_dir`` resolved) into a plan under ``protocol`` (already checked to be
        one of ``protocols``); options of ``spec`` that do not apply raise ConfigError naming the option."""
        ...

    @property
    def generated(self) -> bool:
        """True for a layout that makes its own data (then ``default_root`` gives a folder)."""
        ...

    def default_root(self, spec: DatasetSpec) -> Path | None:
        """The folder to read when ``spec.data_dir`` is None (a layout that can generate its data makes it
        on first use), or None: then ``data_dir`` is required."""
        ...


@dataclass(frozen=True)
class Layout:
    """A ``DatasetLayout`` from a layout module's parts: ``LAYOUT = Layout("fsdd", PROTOCOLS, build, fix)``
    beside the module's ``build(spec, root, protocol)`` and ``fix(root)`` functions; ``default(spec)``
    only for a layout that can make its data without a ``data_dir`` (the synthetic set)."""

    name: str
    protocols: tuple[str, ...]
    build_plan: Callable[[DatasetSpec, Path, str], DatasetPlan]
    fix: Callable[[Path], str]
    protocol_hint: str = ""
    default: Callable[[DatasetSpec], Path] | None = None

    def missing_fix(self, root: Path) -> str:
        return self.fix(root)

    def build(self, spec: DatasetSpec, root: Path, protocol: str) -> DatasetPlan:
        return self.build_plan(spec, root, protocol)

    @property
    def generated(self) -> bool:
        return self.default is not None

    def default_root(self, spec: DatasetSpec) -> Path | None:
        return self.default(spec) if self.default is not None else None
