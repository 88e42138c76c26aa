"""``load_dataset(spec)``: pick the layout named by ``spec.dataset`` from the registry, then check every
file's header, resolve byte-identical duplicates and balance `_unknown_` / `_silence_` the same way for
every dataset.
"""

from __future__ import annotations

import difflib
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from kwsbench.data import folder, fsdd, speech_commands, synthetic, test_set
from kwsbench.data.audio import AudioInfo, BadAudio, bad_file_error, read_info
from kwsbench.data.duplicates import (
    HEAD_BYTES,
    Fingerprint,
    find_duplicate_groups,
    fingerprint,
    unify_duplicate_splits,
)
from kwsbench.data.layout import DatasetLayout
from kwsbench.data.records import (
    CLIP_SAMPLES,
    SILENCE,
    SPLITS,
    UNKNOWN,
    DatasetIndex,
    Skipped,
    printable,
)
from kwsbench.data.splits import (
    NOISE_RANGES,
    DatasetPlan,
    check_fractions,
    keyword_targets,
    relative_name,
    silence_crops,
    subsample_unknown,
)
from kwsbench.errors import ConfigError, DataError
from kwsbench.specs import DatasetSpec

log = logging.getLogger(__name__)

# The registry of dataset layouts (each a ``DatasetLayout``): a new layout is a new module and one line here.
DATASETS: dict[str, DatasetLayout] = {
    layout.name: layout
    for layout in (
        speech_commands.LAYOUT,
        test_set.LAYOUT,
        folder.LAYOUT,
        fsdd.LAYOUT,
        synthetic.LAYOUT,
    )
}


def dataset_names() -> list[str]:
    """The registered layout names, in registry order (the CLI's ``--dataset`` choices)."""
    return list(DATASETS)


def get_layout(name: str) -> DatasetLayout:
    """The layout registered as ``name``; an unknown name is a ConfigError naming the close matches."""
    layout = DATASETS.get(name)
    if layout is None:
        close = difflib.get_close_matches(name, DATASETS, n=2)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ConfigError(f"--dataset {name}: unknown dataset; {hint}choose one of {', '.join(DATASETS)}")
    return layout


def _root_of(spec: DatasetSpec, layout: DatasetLayout) -> Path:
    """``spec.data_dir`` as a folder that exists; a missing folder or a file is one DataError with the fix.

    Without a ``data_dir`` the layout's default folder (generated on first use), if it has one.
    """
    if spec.data_dir is None:
        root = layout.default_root(spec)
        if root is None:
            raise ConfigError(
                f"data_dir: required for dataset {spec.dataset}; name the dataset's root folder (--data-dir)"
            )
        return root
    root = Path(spec.data_dir).expanduser()
    shown = printable(root)
    if root.is_dir():
        return root
    if root.is_symlink() and not root.exists():
        raise DataError(f"--data-dir {shown}: a symbolic link to nothing; {layout.missing_fix(root)}")
    if root.exists():
        if root.name.lower().endswith((".tar.gz", ".tgz", ".tar", ".zip")):
            fix = "extract it and pass the extracted folder"
            if spec.dataset in ("speech_commands", "speech_commands_test_set"):
                # download_archive uses an official archive lying beside the target instead of fetching it.
                fix += (
                    " (or pass a new folder beside it with --download: the archive is verified and extracted)"
                )
        else:
            fix = f"pass the folder that holds the dataset (e.g. {printable(root.parent)}), not a file in it"
        raise DataError(f"--data-dir {shown}: is a file, not a folder; {fix}")
    raise DataError(f"{shown}: no such folder; {layout.missing_fix(root)}")


def load_dataset(spec: DatasetSpec) -> DatasetIndex:
    """Resolve ``spec`` (layout, folder, protocol, keywords, noise, version) into clips with classes and
    splits; the index carries ``spec`` with the protocol and version the layout resolved.

    Every file's header is checked (no decoding): without ``spec.skip_bad`` the first bad file raises
    DataError, with it bad files are listed in ``skipped``. No group of byte-identical files straddles two
    splits.
    """
    if not isinstance(spec, DatasetSpec):
        raise TypeError(
            f"load_dataset takes a DatasetSpec (DatasetSpec.create(...)), got {type(spec).__name__}"
        )
    layout = get_layout(spec.dataset)
    check_fractions(spec.fractions)
    protocol = layout.protocols[0] if spec.protocol is None else spec.protocol
    if protocol not in layout.protocols:
        hint = layout.protocol_hint
        raise ConfigError(
            f"--protocol {protocol}: {spec.dataset} supports {', '.join(layout.protocols)}"
            + (f" ({hint})" if hint else "")
        )
    root = _root_of(spec, layout)
    plan = layout.build(spec, root, protocol)
    index = _assemble(plan, skip_bad=spec.skip_bad)
    index.spec = spec.replace(protocol=index.protocol, version=index.version)
    return index


def _scan(
    paths: Sequence[Path], skip_bad: bool
) -> tuple[dict[Path, AudioInfo], dict[Path, Fingerprint], list[Skipped]]:
    """Header check and duplicate fingerprint of each file, in sorted order, from one open per file."""
    infos: dict[Path, AudioInfo] = {}
    prints: dict[Path, Fingerprint] = {}
    skipped: list[Skipped] = []
    for path in sorted(set(paths), key=str):
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                head = f.read(HEAD_BYTES)
                infos[path] = read_info(f, size)
            prints[path] = fingerprint(head, size)
            continue
        except BadAudio as err:
            reason, convertible = err.reason, err.convertible
        except OSError as err:
            reason, convertible = f"cannot read ({err.strerror or err})", False
        if not skip_bad:
            raise bad_file_error(path, reason, convertible=convertible)
        log.warning("skipping %s: %s", printable(path), reason)
        skipped.append(Skipped(printable(path), reason))
    return infos, prints, skipped


def _assemble(plan: DatasetPlan, *, skip_bad: bool) -> DatasetIndex:
    if plan.ignored and not skip_bad:
        first = plan.ignored[0]
        raise DataError(f"{first.path}: {first.reason}; {first.fix or 'remove it or pass --skip-bad'}")
    for item in plan.ignored:
        log.warning("skipping %s: %s", item.path, item.reason)
    files = [c.path for c in plan.clips if c.num_samples is None]
    infos, prints, skipped = _scan(files + plan.noise_files, skip_bad)
    skipped = sorted([*plan.ignored, *skipped], key=lambda s: s.path)
    clips = [c for c in plan.clips if c.path in infos]
    noise = [p for p in plan.noise_files if p in infos]
    notes = list(plan.notes)

    groups = find_duplicate_groups((p, prints[p]) for p in dict.fromkeys(c.path for c in clips))
    clips, moved = unify_duplicate_splits(clips, groups)
    if moved:
        notes.append(f"{moved} duplicate copies moved to the split of their group's first file")
    word_clips = Counter(c.split for c in clips if c.label != SILENCE)

    silence = dict(plan.silence)
    if plan.rebalance:
        targets = keyword_targets(clips, plan.keywords)
        if UNKNOWN in plan.classes:
            before = Counter(c.split for c in clips if c.label == UNKNOWN)
            clips = subsample_unknown(clips, targets, plan.root)
            notes.append(
                "_unknown_ subsampled per split to the mean keyword-class size by a seeded SHA-1 of the path: "
                + ", ".join(f"{s} {min(before[s], targets[s])}/{before[s]}" for s in SPLITS)
            )
        if noise and SILENCE in plan.classes and not any(c.label == SILENCE for c in clips):
            clips += silence_crops([(p, infos[p].frames_at()) for p in noise], targets)
            silence = {
                "source": "1 s crops of the background-noise files",
                "noise_files": [relative_name(p, p.parent.parent) for p in noise],
                "ranges": {s: list(NOISE_RANGES[s]) for s in SPLITS},
                "clip_samples": CLIP_SAMPLES,
                "per_split": {s: targets[s] for s in SPLITS},
                "rule": "count = mean keyword-class size per split (rounded down); each split cut only from "
                "its own fraction of every noise file, crops evenly spaced",
            }
    empty = [s for s in SPLITS if not any(c.split == s for c in clips)]
    if empty:
        notes.append(f"empty splits: {', '.join(empty)}")
    return DatasetIndex(
        name=plan.name,
        root=plan.root,
        protocol=plan.protocol,
        classes=plan.classes,
        clips=clips,
        noise_files=noise,
        duplicate_groups=[[relative_name(p, plan.root) for p in g] for g in groups],
        skipped=skipped,
        version=plan.version,
        notes=notes,
        word_clips={s: word_clips[s] for s in SPLITS},
        silence=silence,
    )
