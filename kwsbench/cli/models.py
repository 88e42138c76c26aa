"""`kwsbench models [PATTERN]`: every registered model's measured counts beside its paper's figures."""

from __future__ import annotations

import argparse

from kwsbench.cli.common import add_common, emit, positive_int, subparser


def _models(args: argparse.Namespace) -> int:
    from kwsbench.measure.describe import describe_models, format_models_table

    return emit(describe_models(args.pattern, num_classes=args.num_classes), args.json, format_models_table)


def register(sub) -> None:
    models = subparser(sub, "models", "registered models: params, MACs and the paper's figures")
    models.add_argument("pattern", nargs="?", default="*", help="model name or shell-style pattern")
    models.add_argument("--num-classes", type=positive_int, default=12, help="classifier outputs")
    add_common(models, json_help="print a list of JSON records")
    models.set_defaults(func=_models)
