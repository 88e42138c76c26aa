"""The report's tables as pandas DataFrames (numbers for the CSV files) and their Markdown rendering.

Rows are always sorted by context, then variant label, then backend or seed, so that a report is a pure
function of its records. Accuracies are fractions in the frames and percentages in Markdown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from kwsbench.report.claims import option_order, paired_by_seed, trend_groups
from kwsbench.report.stats import CONTRADICTED, SUPPORTED, UNDECIDED, mean_std
from kwsbench.report.trials import Context, Trial, TrialSet, alias
from kwsbench.report.variants import FAMILY_DEFAULTS, Variant, describe, variant_of
from kwsbench.results.schema import LatencyRecord


def _median(values: Sequence[float]) -> float | None:
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return None
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def _groups(trials: Sequence[Trial]) -> dict[tuple[Context, str], list[Trial]]:
    out: dict[tuple[Context, str], list[Trial]] = {}
    for trial in trials:
        out.setdefault((trial.context, trial.label), []).append(trial)
    return dict(
        sorted(
            out.items(), key=lambda kv: (kv[0][0].dataset, kv[0][0].recipe, kv[0][0].num_classes, kv[0][1])
        )
    )


def _distinct(values: Sequence[Any]) -> Any:
    # Counts are the same for every seed of a variant; where they are not, the table says so (None).
    found = sorted({v for v in values if v is not None})
    return found[0] if len(found) == 1 else None


def _latency_by_backend(trials: Sequence[Trial]) -> dict[str, list[LatencyRecord]]:
    out: dict[str, list[LatencyRecord]] = {}
    for trial in trials:
        for values in trial.record.latency:
            record = LatencyRecord.from_dict(values, f"trial {trial.record.trial_id} latency: ")
            out.setdefault(record.backend, []).append(record)  # type: ignore[arg-type]
    return dict(sorted(out.items()))


def pareto_mask(costs: Sequence[float | None], values: Sequence[float | None]) -> list[bool]:
    """Whether each point is on the Pareto front (lower cost, higher value); points lacking either are not.

    A point is dominated when another costs no more and scores no less, and differs in one of the two.
    """
    points = list(zip(costs, values, strict=True))
    mask = []
    for i, (c, v) in enumerate(points):
        if c is None or v is None:
            mask.append(False)
            continue
        dominated = any(
            j != i and oc is not None and ov is not None and oc <= c and ov >= v and (oc < c or ov > v)
            for j, (oc, ov) in enumerate(points)
        )
        mask.append(not dominated)
    return mask


def summary_table(trial_set: TrialSet, bench: Sequence[LatencyRecord] = ()) -> pd.DataFrame:
    """Per context and variant: seeds, accuracies (mean, std), counts, training speed, latency per backend,
    and whether the variant is on the accuracy-vs-MACs Pareto front of its context."""
    rows = []
    failed_by_variant: dict[Variant, int] = {}
    for record in trial_set.failed:
        key = variant_of(record.model, record.options)
        failed_by_variant[key] = failed_by_variant.get(key, 0) + 1
    bench_latency = _bench_by_variant(bench)
    for (context, label), group in _groups(trial_set.trials).items():
        row: dict[str, Any] = {
            "context": trial_set.context_name(context),
            "variant": label,
            "paper_model": alias(group[0].variant),
            "seeds": len(group),
            "seed_list": " ".join(str(s) for s in sorted(t.seed for t in group)),
            "failed": failed_by_variant.get(group[0].variant, 0),
        }
        for attribute in ("final_test", "best_test", "final_validation", "best_validation"):
            mean, std = mean_std([getattr(t, attribute) for t in group if getattr(t, attribute) is not None])
            row[f"{attribute}_mean"], row[f"{attribute}_std"] = mean, std
        row["best_epoch_mean"] = mean_std(
            [t.record.metrics.get("best_epoch") for t in group if t.record.metrics.get("best_epoch")]
        )[0]
        row["epochs"] = _distinct([t.record.metrics.get("epochs") for t in group])
        for count in ("params", "macs_total", "macs_conv"):
            row[count] = _distinct([getattr(t.record, count) for t in group])
        row["train_samples_per_s"] = mean_std(
            [t.record.train_samples_per_s for t in group if t.record.train_samples_per_s]
        )[0]
        latency = _latency_by_backend(group)
        for backend, records in latency.items():
            row[f"latency_ms_{backend}"] = _median(
                [r.median_ms for r in records if r.status == "ok" and r.median_ms is not None]
            )
        for backend, records in bench_latency.get(group[0].variant, {}).items():
            row.setdefault(
                f"latency_ms_{backend}", _median([r.median_ms for r in records if r.median_ms is not None])
            )
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    # Latency columns after the others, backends in alphabetical order.
    fixed = [c for c in frame.columns if not c.startswith("latency_ms_")]
    frame = frame[fixed + sorted(c for c in frame.columns if c.startswith("latency_ms_"))]
    frame["pareto_macs"] = False
    for _context, part in frame.groupby("context", sort=True):
        mask = pareto_mask(_nullable(part["macs_total"]), _nullable(part["final_test_mean"]))
        frame.loc[part.index, "pareto_macs"] = mask
    for column in [c for c in frame.columns if c.startswith("latency_ms_")]:
        flag = "pareto_" + column.removeprefix("latency_ms_")
        frame[flag] = False
        for _context, part in frame.groupby("context", sort=True):
            frame.loc[part.index, flag] = pareto_mask(
                _nullable(part[column]), _nullable(part["final_test_mean"])
            )
    return frame


def _nullable(series: pd.Series) -> list[float | None]:
    return [None if pd.isna(v) else float(v) for v in series]


def _bench_by_variant(bench: Sequence[LatencyRecord]) -> dict[Variant, dict[str, list[LatencyRecord]]]:
    out: dict[Variant, dict[str, list[LatencyRecord]]] = {}
    for record in bench:
        if record.status == "ok" and record.median_ms is not None:
            out.setdefault(variant_of(record.name), {}).setdefault(record.backend, []).append(record)
    return out


def protocol_text(protocol: Mapping[str, Any]) -> str:
    """A latency protocol in one phrase: version, warm-up, calls, what is timed, batch and threads."""
    if not protocol:
        return "–"
    return (
        f"{protocol.get('version', '?')}: warm-up {protocol.get('warmup', '?')}, "
        f"≥ {protocol.get('iterations', '?')} calls and ≥ {protocol.get('min_time_s', '?')} s, "
        f"timed {protocol.get('timed', '?')}, batch {protocol.get('batch', '?')}, "
        f"{protocol.get('threads', '?')} thread(s), input {protocol.get('input', '?')}"
    )


def latency_table(trial_set: TrialSet, bench: Sequence[LatencyRecord] = ()) -> pd.DataFrame:
    """Per context, variant and backend (and per model and backend of a bench file): the median over trials
    of each trial's median, its p90, threads, batch, status and the protocol it was taken under."""
    rows = []
    for (context, label), group in _groups(trial_set.trials).items():
        for backend, records in _latency_by_backend(group).items():
            rows.append(_latency_row("trials", trial_set.context_name(context), label, backend, records))
    for name in sorted({r.name for r in bench}):
        by_backend: dict[str, list[LatencyRecord]] = {}
        for record in bench:
            if record.name == name:
                by_backend.setdefault(record.backend, []).append(record)
        for backend, records in sorted(by_backend.items()):
            rows.append(_latency_row("bench", "", describe(name), backend, records))
    return pd.DataFrame(rows)


def _latency_row(source: str, context: str, label: str, backend: str, records: list[LatencyRecord]) -> dict:
    ok = [r for r in records if r.status == "ok" and r.median_ms is not None]
    statuses = sorted({r.status for r in records if r.status != "ok"})
    notes = sorted({r.note for r in records if r.note})
    protocols = sorted({json.dumps(r.protocol, sort_keys=True) for r in records})
    return {
        "source": source,
        "context": context,
        "variant": label,
        "backend": backend,
        "measurements": len(records),
        "median_ms": _median([r.median_ms for r in ok]),  # type: ignore[misc]
        "p90_ms": _median([r.p90_ms for r in ok if r.p90_ms is not None]),
        "threads": _distinct([r.threads for r in records]),
        "batch": _distinct([r.batch for r in records]),
        "status": ", ".join(statuses) or "ok",
        "note": "; ".join(notes),
        "protocol": " | ".join(protocol_text(json.loads(p)) for p in protocols),
    }


@dataclass(frozen=True)
class Ablation:
    """Variants of one context that differ in exactly one option, with their trials by option value."""

    context: str
    family: str
    option: str
    rest: str
    groups: dict[Any, list[Trial]]

    @property
    def values(self) -> list[Any]:
        return list(self.groups)


def ablations(trial_set: TrialSet) -> list[Ablation]:
    """Every one-option ablation in the trials (SSN on/off, sub-bands, width...), sorted."""
    found: dict[tuple[str, str, Any], Ablation] = {}
    for context in trial_set.contexts:
        trials = [t for t in trial_set.trials if t.context == context]
        variants = sorted({t.variant for t in trials})
        for variant in variants:
            for option, _ in variant.options:
                key = (trial_set.context_name(context), option, variant.without(option))
                if key in found:
                    continue
                groups = trend_groups(trials, variant, option)
                if len(groups) < 2:
                    continue
                defaults = FAMILY_DEFAULTS.get(variant.family, {})
                rest = [
                    f"{k}={v}" for k, v in variant.without(option)[1] if k not in defaults or defaults[k] != v
                ]
                fixed = f"{variant.family}, " + (
                    " ".join(rest) if rest else "other options at their defaults"
                )
                found[key] = Ablation(key[0], variant.family, option, fixed, groups)
    return [found[k] for k in sorted(found, key=lambda k: (k[0], k[1], json.dumps(k[2], default=str)))]


def reference_value(ablation: Ablation) -> Any:
    """The value the others are compared with: the family default where it was run, else the first value."""
    default = FAMILY_DEFAULTS.get(ablation.family, {}).get(ablation.option, ablation.values[0])
    return default if default in ablation.groups else ablation.values[0]


def ablation_table(items: Sequence[Ablation]) -> pd.DataFrame:
    """Per ablation and option value: seeds, accuracies (mean, std) and the paired difference to the
    reference value on matched seeds (final epoch): mean, confidence interval, p-values."""
    rows = []
    for index, ablation in enumerate(items, 1):
        ref = reference_value(ablation)
        for value in sorted(ablation.groups, key=option_order):
            group = ablation.groups[value]
            row: dict[str, Any] = {
                "ablation": index,
                "context": ablation.context,
                "option": ablation.option,
                "value": value,
                "reference": value == ref,
                "fixed": ablation.rest,
                "variant": group[0].label,
                "seeds": len(group),
            }
            for attribute in ("final_test", "best_test"):
                mean, std = mean_std(
                    [getattr(t, attribute) for t in group if getattr(t, attribute) is not None]
                )
                row[f"{attribute}_mean"], row[f"{attribute}_std"] = mean, std
            test = None if value == ref else paired_by_seed(group, ablation.groups[ref], "final_test")[1]
            row["paired_seeds"] = test.n if test else 0
            row["diff_mean"] = test.mean_diff if test and test.n else None
            row["diff_ci_low"] = test.ci_low if test else None
            row["diff_ci_high"] = test.ci_high if test else None
            row["p_t"] = test.p_t if test else None
            row["p_wilcoxon"] = test.p_wilcoxon if test else None
            # Whether this value is significantly higher or lower than the reference (paired t-test).
            row["verdict"] = _DIRECTION[test.verdict()[0]] if test else ""
            rows.append(row)
    return pd.DataFrame(rows)


_DIRECTION = {SUPPORTED: "higher", CONTRADICTED: "lower", UNDECIDED: "undecided"}


FA_TARGETS = (0.5, 1.0, 2.0)  # false alarms per hour at which stream-eval reports false rejections


def streaming_table(trial_set: TrialSet) -> pd.DataFrame:
    """Per context and variant with streaming figures: FRR at each FA/h target, mean and std over seeds."""
    rows = []
    for (context, label), group in _groups(trial_set.trials).items():
        evals = [t.record.stream_eval for t in group if t.record.stream_eval]
        if not evals:
            continue
        row: dict[str, Any] = {
            "context": trial_set.context_name(context),
            "variant": label,
            "seeds": len(evals),
            "hours": _distinct([e.get("hours") for e in evals]),
            "snr_db": _distinct([e.get("snr_db") for e in evals]),
            "occurrences": sum(e.get("occurrences") or 0 for e in evals),
        }
        for target in FA_TARGETS:
            rates = [
                p["false_rejection_rate"]
                for e in evals
                for p in e.get("operating_points", [])
                if p.get("target_false_alarms_per_hour") == target
                and p.get("false_rejection_rate") is not None
            ]
            row[f"frr_at_{target:g}_fa_h"], row[f"frr_at_{target:g}_fa_h_std"] = mean_std(rates)
        rows.append(row)
    return pd.DataFrame(rows)


def trials_table(trial_set: TrialSet) -> pd.DataFrame:
    """Every trial (finished and failed), one row each, with its accuracies, counts and error."""
    context_of = {t.record.trial_id: trial_set.context_name(t.context) for t in trial_set.trials}
    rows = []
    for record in trial_set.records:
        best, final = record.metrics.get("best") or {}, record.metrics.get("final") or {}
        rows.append({
            "experiment": record.experiment,
            "trial_id": record.trial_id,
            "variant": describe(record.model, record.options),
            "context": context_of.get(record.trial_id, ""),
            "seed": record.seed,
            "status": record.status,
            "best_epoch": record.metrics.get("best_epoch"),
            "best_validation": best.get("validation_accuracy"),
            "best_test": best.get("test_accuracy"),
            "final_validation": final.get("validation_accuracy"),
            "final_test": final.get("test_accuracy"),
            "params": record.params,
            "macs_total": record.macs_total,
            "macs_conv": record.macs_conv,
            "train_samples_per_s": record.train_samples_per_s,
            "wall_time_s": record.wall_time_s,
            "git_commit": record.git_commit,
            "started_at": record.started_at,
            "finished_at": record.finished_at,
            "error": one_line(record.error),
        })  # fmt: skip
    return pd.DataFrame(rows)


def one_line(text: str | None) -> str:
    """An error message on one line (tracebacks and multi-line messages folded)."""
    return " ".join(str(text or "").split())


# ---------------------------------------------------------------------------------------------------------
# Markdown.


def markdown(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A GitHub Markdown table; ``align`` gives one of l/r per column (default: left)."""

    def cell(value: Any) -> str:
        text = "–" if value is None or value == "" else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    marks = {"l": "---", "r": "---:", "c": ":---:"}
    align = align or "l" * len(headers)
    assert len(align) == len(headers), (align, headers)
    spec = [marks[a] for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(spec) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(mean: Any, std: Any = None) -> str:
    """A fraction as ``93.21 ± 0.45`` (percent); ``–`` when missing."""
    if mean is None or pd.isna(mean):
        return "–"
    text = f"{mean * 100:.2f}"
    return text + (f" ± {std * 100:.2f}" if std is not None and not pd.isna(std) else "")


def count(value: Any) -> str:
    """Parameters as ``9,232``; MACs as ``3.11 M``."""
    if value is None or pd.isna(value):
        return "–"
    return f"{value / 1e6:.2f} M" if value >= 1e6 else f"{int(value):,}"


def ms(value: Any) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"
