"""``load_dataset(name, data_dir, ...)``: pick the layout reader by name, then check every file's header,
resolve byte-identical duplicates and balance `_unknown_` / `_silence_` the same way for every dataset.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from kwsbench.data import folder, fsdd, speech_commands, test_set
from kwsbench.data.audio import AudioInfo, BadAudio, bad_file_error, read_info
from kwsbench.data.duplicates import (
    HEAD_BYTES,
    Fingerprint,
    find_duplicate_groups,
    fingerprint,
    unify_duplicate_splits,
)
from kwsbench.data.records import CLIP_SAMPLES, SILENCE, SPLITS, UNKNOWN, DatasetIndex, Skipped
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

log = logging.getLogger(__name__)

# Each layout module has ``build(root, *, protocol, ...) -> DatasetPlan`` and ``PROTOCOLS`` (default first).
DATASETS: dict[str, ModuleType] = {
    "speech_commands": speech_commands,
    "speech_commands_test_set": test_set,
    "folder": folder,
    "fsdd": fsdd,
}
_MISSING_FIX: dict[str, Callable[[Path], str]] = {
    "speech_commands": speech_commands.archive_fix,
    "speech_commands_test_set": test_set.archive_fix,
    "folder": lambda root: f"create {root} with one sub-folder of WAV files per label",
    "fsdd": lambda root: f"clone github.com/Jakobovski/free-spoken-digit-dataset into {root}",
}


def parse_keywords(keywords: list[str] | str | None) -> list[str] | None:
    """Keywords as a list: a comma-separated string (the CLI's ``--keywords a,b``) is split."""
    if keywords is None:
        return None
    items = keywords.split(",") if isinstance(keywords, str) else list(keywords)
    items = [k.strip() for k in items if k.strip()]
    return items or None


def load_dataset(
    name: str,
    data_dir: Path | str,
    *,
    protocol: str | None = None,
    keywords: list[str] | str | None = None,
    noise_dir: Path | str | None = None,
    version: str | None = None,
    skip_bad: bool = False,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
) -> DatasetIndex:
    """Resolve dataset ``name`` under ``data_dir`` and ``protocol`` into clips with classes and splits.

    Every file's header is checked (no decoding): without ``skip_bad`` the first bad file raises DataError,
    with it bad files are listed in ``skipped``. No group of byte-identical files straddles two splits.
    """
    if name not in DATASETS:
        raise ConfigError(f"--dataset {name}: unknown dataset; choose one of {', '.join(DATASETS)}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; {_MISSING_FIX[name](root)}")
    layout = DATASETS[name]
    protocol = layout.PROTOCOLS[0] if protocol is None else str(protocol)
    if protocol not in layout.PROTOCOLS:
        hint = getattr(layout, "PROTOCOL_HINT", "")
        raise ConfigError(
            f"--protocol {protocol}: {name} supports {', '.join(layout.PROTOCOLS)}"
            + (f" ({hint})" if hint else "")
        )
    plan = layout.build(
        root,
        protocol=protocol,
        keywords=parse_keywords(keywords),
        noise_dir=noise_dir,
        version=version,
        fractions=check_fractions(fractions),
    )
    return _assemble(plan, skip_bad=skip_bad)


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
            reason = err.reason
        except OSError as err:
            reason = f"cannot read ({err.strerror or err})"
        if not skip_bad:
            raise bad_file_error(path, reason)
        log.warning("skipping %s: %s", path, reason)
        skipped.append(Skipped(str(path), reason))
    return infos, prints, skipped


def _assemble(plan: DatasetPlan, *, skip_bad: bool) -> DatasetIndex:
    files = [c.path for c in plan.clips if c.num_samples is None]
    infos, prints, skipped = _scan(files + plan.noise_files, skip_bad)
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
