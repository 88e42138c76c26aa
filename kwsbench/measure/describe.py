"""`kwsbench models`: each registered model's measured counts beside its paper's declared figures.

Rows are torch-free ``CountsRecord``s, so reports can read them without importing torch.
"""

from __future__ import annotations

import dataclasses
import sys

import torch
from tqdm import tqdm

from kwsbench.measure.counts import count_macs, count_params
from kwsbench.models import create_model, model_info
from kwsbench.models.registry import resolve_models
from kwsbench.results.schema import CountsRecord


def _ratio(measured: int | None, declared: int | None) -> float | None:
    return None if not measured or not declared else round(measured / declared, 4)


def describe_model(name: str, num_classes: int = 12) -> CountsRecord:
    """Measured params and MACs (fvcore, eval mode, declared input, batch 1) beside the declared figures."""
    info = model_info(name)
    model = create_model(name, num_classes=num_classes)
    params = count_params(model)
    torch.manual_seed(0)
    macs = count_macs(model, torch.randn(info.input.shape(1)))
    declared = dataclasses.asdict(info.declared)
    reference = dataclasses.asdict(info.reference)
    at_paper_head = num_classes == 12  # declared and reference figures are for 12-class heads
    params_vs_declared = _ratio(params, info.declared.params) if at_paper_head else None
    return CountsRecord(**{
        "name": name,
        "family": info.family,
        "description": info.description,
        "citation": info.citation,
        "num_classes": num_classes,
        "input": {
            "kind": info.input.kind,
            "n_features": info.input.n_features,
            "frames": info.input.frames,
            "shape": list(info.input.shape(1)),
        },
        "params": params,
        "macs_total": macs.total,
        "macs_conv": macs.conv,
        "macs_by_operator": macs.by_operator,
        "macs_skipped_ops": macs.skipped,
        "macs_counting": "fvcore, eval mode, batch 1 at the declared input; total includes BatchNorm and pooling, "
        "conv counts conv/linear/matmul only",
        "declared": declared,
        "reference": reference,
        "checks": {
            "params_equal_reference": (params == info.reference.params)
            if at_paper_head and info.reference.params
            else None,
            "params_vs_declared": params_vs_declared,
            "params_within_tolerance": None
            if params_vs_declared is None
            else abs(params_vs_declared - 1) <= info.param_tolerance,
            "param_tolerance": info.param_tolerance,
            "macs_total_vs_declared": _ratio(macs.total, info.declared.macs) if at_paper_head else None,
            "macs_conv_vs_declared": _ratio(macs.conv, info.declared.macs) if at_paper_head else None,
        },
    })  # fmt: skip


def describe_models(pattern: str = "*", num_classes: int = 12) -> list[CountsRecord]:
    """``describe_model`` for every registered name matching ``pattern`` (a progress bar on stderr)."""
    names = resolve_models(pattern)
    rows = []
    for name in tqdm(
        names, desc="counting", unit="model", file=sys.stderr, disable=len(names) < 4, leave=False
    ):
        rows.append(describe_model(name, num_classes))
    return rows


def _m(x: int | None) -> str:
    return "-" if x is None else f"{x / 1e6:.2f}M"


def _k(x: int | None) -> str:
    return "-" if x is None else f"{x:,}"


def _pct(r: float | None) -> str:
    return "-" if r is None else f"{(r - 1) * 100:+.1f}%"


def format_models_table(records: list[CountsRecord]) -> str:
    """A fixed-width table: measured params and MACs, the paper's figures as stated, and the differences."""
    header = (
        "name",
        "family",
        "params",
        "ref params",
        "paper params",
        "Δparams",
        "MACs total",
        "MACs conv",
        "paper MACs",
        "Δtotal",
        "paper acc v1/v2",
    )
    table = [header]
    for r in (record.to_dict() for record in records):
        d = r["declared"]
        acc = {a["dataset"]: a["top1"] for a in d["accuracy"]}
        table.append(
            (
                r["name"],
                r["family"],
                _k(r["params"]),
                _k(r["reference"]["params"]),
                d["params_stated"] or "-",
                _pct(r["checks"]["params_vs_declared"]),
                _m(r["macs_total"]),
                _m(r["macs_conv"]),
                d["macs_stated"] or "-",
                _pct(r["checks"]["macs_total_vs_declared"]),
                f"{acc.get('gsc_v1_12', '-')}/{acc.get('gsc_v2_12', '-')}",
            )
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        "MACs: fvcore in eval mode on one input at each model's declared shape; 'total' includes BatchNorm and "
        "pooling (the BC-ResNet paper's #Mult), 'conv' only conv/linear/matmul. 'ref params': the count of the "
        "model's public reference code; 'paper': as the paper states it (Δ = measured vs paper). "
        "`--json` gives sources, counting conventions and notes."
    )
    return "\n".join(lines)
