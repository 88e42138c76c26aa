"""The DET curve of a ``stream_eval`` record: false-rejection rate against false alarms per hour (log x).

Drawn from the record alone (no torch), in the report's fixed style and PNG settings, so the same record
gives the same bytes. Each curve is the best FRR within each false-alarm budget (the lower envelope of the
sweep, as the table's operating points are); zero false alarms cannot sit on a log axis, so curves start
at the first budget above zero, and the 0.5 / 1 / 2 FA/h operating points are marked.
"""

from __future__ import annotations

from pathlib import Path

import seaborn as sns
from matplotlib import ticker

from kwsbench.atomic import write_atomically
from kwsbench.report.plots import new_figure, plot_style, save_png
from kwsbench.results.schema import StreamEvalRecord


def _curve(fa_per_hour: list[float], frr: list[float | None]) -> tuple[list[float], list[float]]:
    """The best FRR (%) within each false-alarm budget, as the operating points take it: the refractory
    period makes FA/h not quite monotone in the threshold, so the sweep's raw points zigzag."""
    points = sorted((f, r * 100) for f, r in zip(fa_per_hour, frr, strict=True) if r is not None)
    xs: list[float] = []
    ys: list[float] = []
    best = float("inf")
    for fa, rate in points:
        best = min(best, rate)
        if fa > 0:  # a log axis has no place for zero false alarms
            xs.append(fa)
            ys.append(best)
    return xs, ys


def det_figure(record: StreamEvalRecord, path: str | Path) -> Path | None:
    """Write the DET curve (overall, and per keyword in thin lines) to ``path``; None when it has no points."""
    det = record.det
    overall = _curve(det.get("false_alarms_per_hour", []), det.get("false_rejection_rate", []))
    if not overall[0]:
        return None
    with plot_style():
        fig, (ax,) = new_figure(6.4, 4.2)
        palette = sns.color_palette("colorblind", max(len(record.keywords), 1))
        for color, keyword in zip(palette, record.keywords, strict=False):
            part = det.get("per_keyword", {}).get(keyword, {})
            xs, ys = _curve(part.get("false_alarms_per_hour", []), part.get("false_rejection_rate", []))
            if xs:
                ax.step(xs, ys, where="post", color=color, linewidth=0.8, alpha=0.6, label=keyword)
        ax.step(*overall, where="post", color="black", linewidth=2, label="all keywords")
        for point in record.operating_points:
            target = point["target_false_alarms_per_hour"]
            ax.axvline(target, color="grey", linestyle=":", linewidth=0.8)
            if point["false_rejection_rate"] is not None:
                ax.plot([target], [point["false_rejection_rate"] * 100], "o", color="black", markersize=4)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("false alarms per hour")
        ax.set_ylabel("false rejection rate (%)")
        ax.set_title(
            f"DET: {record.model}, {record.hours:.2f} h, {sum(record.occurrences.values())} keywords"
        )
        ax.legend(loc="upper right", fontsize=7, ncol=2)
        # The report's PNG settings, written atomically: a DET plot is kept beside its record.
        return write_atomically(path, lambda f: save_png(fig, f))
