"""`kwsbench bundle RESULTS.jsonl`: copy a sweep's trained models into the package's bundled checkpoints."""

from __future__ import annotations

import argparse

from kwsbench.cli.common import add_common, emit, subparser


def _bundle(args: argparse.Namespace) -> int:
    from kwsbench.checkpoints import bundled_dir
    from kwsbench.runner.bundle import bundle_trials

    written = bundle_trials(args.results, args.dest or bundled_dir())
    return emit([str(p) for p in written], args.json, lambda paths: "\n".join(f"wrote {p}" for p in paths))


def register(sub) -> None:
    bundle = subparser(
        sub,
        "bundle",
        "copy the finished trials of a sweep (one per model) into the bundled checkpoints, with a JSON card each",
    )
    bundle.add_argument("results", metavar="RESULTS.jsonl", help="results file of `kwsbench run`")
    bundle.add_argument("--dest", default=None, help="folder (default: the package's kwsbench/checkpoints)")
    add_common(bundle, json_help="print the written paths as JSON")
    bundle.set_defaults(func=_bundle)
