"""`kwsbench data summary|prepare`: inspect a dataset under a protocol, or decode it into the clip cache."""

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
    p.add_argument("--data-dir", required=required, help="the dataset's root folder")
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

    result = prepare(
        dataset_spec(args), cache_dir=args.cache_dir, workers=args.workers, download=args.download
    )
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
