"""`kwsbench data summary|prepare|synth`: inspect a dataset under a protocol, decode it into the clip cache, or
generate the synthetic keyword set."""

from __future__ import annotations

import argparse

from kwsbench.cli.common import add_common, emit, positive_int, subparser


def dataset_spec(args: argparse.Namespace):
    """The one ``DatasetSpec`` the dataset options describe (shared by every command that reads data)."""
    from kwsbench.specs import DatasetSpec

    return DatasetSpec.create(
        args.dataset,
        args.data_dir,
        protocol=args.protocol,
        keywords=args.keywords,
        noise_dir=args.noise_dir,
        version=args.version,
        skip_bad=args.skip_bad,
    )


def add_dataset_options(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The options that make a ``DatasetSpec``; the dataset choices come from the layout registry."""
    from kwsbench.data.datasets import DATASETS

    p.add_argument("--dataset", required=required, choices=list(DATASETS), metavar="NAME",
                   help=f"dataset layout: {' | '.join(DATASETS)}")  # fmt: skip
    # Not required by argparse: a generated layout (synthetic) has a default folder; the others say
    # "data_dir: required" when the dataset is loaded.
    p.add_argument(
        "--data-dir", default=None, help="the dataset's root folder (synthetic: optional, the default set)"
    )
    p.add_argument(
        "--protocol",
        default=None,
        help="split protocol, e.g. 12 | 35 | mini | official (default: the dataset's own)",
    )
    p.add_argument("--keywords", default=None, help="comma-separated keywords (default: the dataset's own)")
    p.add_argument("--noise-dir", default=None, help="a folder of background-noise WAVs")
    p.add_argument("--version", default=None, help="Speech Commands version v1|v2 (default: detected)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable clips and count them")


def _summary(args: argparse.Namespace) -> int:
    from kwsbench.data.summary import format_summary, summarize

    return emit(summarize(dataset_spec(args)), args.json, format_summary)


def _prepare(args: argparse.Namespace) -> int:
    from kwsbench.data.cache import prepare
    from kwsbench.errors import ConfigError

    if args.download and args.data_dir is None:
        raise ConfigError("--download: needs --data-dir, the folder to fetch the archive into")
    result = prepare(
        dataset_spec(args), cache_dir=args.cache_dir, workers=args.workers, download=args.download
    )
    return emit(result, args.json, lambda r: r.describe())


def _synth(args: argparse.Namespace) -> int:
    from kwsbench.data.synthetic import generate

    result = generate(args.out, clips_per_word=args.clips_per_word, seed=args.seed, workers=args.workers)
    return emit(result, args.json, lambda r: r.describe())


def register(sub) -> None:
    data = subparser(sub, "data", "inspect and prepare datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    summary = subparser(data_sub, "summary", "class x split counts, duplicates and skipped files")
    add_dataset_options(summary)
    add_common(summary, json_help="print one JSON object")
    summary.set_defaults(func=_summary)

    prepare = subparser(data_sub, "prepare", "decode, resample and cache fixed-length clips")
    add_dataset_options(prepare)
    prepare.add_argument(
        "--cache-dir", default=None, help="cache folder (default: $KWSBENCH_CACHE or ~/.cache/kwsbench)"
    )
    prepare.add_argument("--workers", type=positive_int, default=2, help="decoding processes")
    prepare.add_argument(
        "--download", default=None, help="fetch this official archive into --data-dir first (e.g. v0.02)"
    )
    add_common(prepare, json_help="print one JSON object")
    prepare.set_defaults(func=_prepare)

    # Already imported for the --dataset choices: the defaults are those of the default set.
    from kwsbench.data.synthetic import DEFAULT_CLIPS_PER_WORD, DEFAULT_SEED

    synth = subparser(
        data_sub, "synth", "generate the synthetic keyword set (eSpeak NG speech over synthesised noise)"
    )
    synth.add_argument(
        "--out", required=True, help="folder to write (created; reused if it holds the same set)"
    )
    synth.add_argument(
        "--clips-per-word", type=positive_int, default=DEFAULT_CLIPS_PER_WORD,
        help="clips per keyword, one per speaker",
    )  # fmt: skip
    synth.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the set's seed")
    synth.add_argument("--workers", type=positive_int, default=2, help="synthesis processes")
    add_common(synth, json_help="print one JSON object")
    synth.set_defaults(func=_synth)
