"""The report's figures: accuracy against MACs and against latency with the Pareto front, and one figure
per ablation with every seed's point.

Figures are drawn on the Agg canvas of a ``matplotlib.figure.Figure`` (no pyplot, so no global backend or
figure registry is touched) under a fixed seaborn style, and saved without the PNG's "Software" entry:
the same records give byte-identical files. Nothing here draws at random (no jitter, no bootstrap).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
import seaborn as sns
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kwsbench.report.claims import option_order
from kwsbench.report.tables import Ablation

DPI = 100
# A fixed look, whatever the user's matplotlibrc says (fonts and sizes change the pixels).
_RC = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "savefig.dpi": DPI,
    "path.simplify": True,
}


def new_figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, Any]:
    """A figure of ``ncols`` axes in a row, on its own Agg canvas (no pyplot state, thread-safe)."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def save_png(fig: Figure, path) -> Path:
    """Write ``fig`` as PNG to ``path`` (a path or a binary file) with bytes that depend on the figure alone."""
    fig.tight_layout()
    # No "Software" text chunk (it names the matplotlib version): the bytes depend on the records alone.
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def plot_style():
    """The house plot style as a context manager (seaborn whitegrid plus kwsbench's rc settings)."""
    style = sns.axes_style("whitegrid")
    return matplotlib.rc_context({**style, **_RC})


def _front(ax, points: pd.DataFrame, cost: str, color: Any) -> None:
    """The Pareto front as a staircase through the non-dominated points (cost ascending)."""
    front = points[points["pareto"]].sort_values([cost, "mean"])
    if len(front) >= 1:
        ax.step(front[cost], front["mean"] * 100, where="post", color=color, linewidth=1, alpha=0.6, zorder=1)


def _points(ax, points: pd.DataFrame, cost: str, color: Any, label: str | None) -> None:
    std = points["std"].fillna(0) * 100
    ax.errorbar(
        points[cost],
        points["mean"] * 100,
        yerr=std,
        fmt="none",
        ecolor=color,
        elinewidth=1,
        capsize=3,
        zorder=2,
    )
    on = points[points["pareto"]]
    off = points[~points["pareto"]]
    ax.scatter(on[cost], on["mean"] * 100, color=color, edgecolor="black", s=42, zorder=3, label=label)
    ax.scatter(off[cost], off["mean"] * 100, color="white", edgecolor=color, s=36, zorder=3, linewidths=1.2)
    for _, row in points.iterrows():
        # One option per line: a label as narrow as its longest part stays inside the axes.
        ax.annotate(
            str(row["name"]).replace(" ", "\n"), (row[cost], row["mean"] * 100), xytext=(5, 2),
            textcoords="offset points", fontsize=7, va="center",
        )  # fmt: skip


def _x_axis(ax, values: Sequence[float]) -> None:
    """Log scale when the costs span more than 8x; plain numbers on the ticks either way."""
    positive = [v for v in values if v and v > 0]
    if positive and max(positive) / min(positive) > 8:
        ax.set_xscale("log")
        # Ticks at 1, 2 and 5 of each decade, written as plain numbers (0.5, not 5x10^-1).
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.margins(x=0.25)


def accuracy_vs_cost(
    points: pd.DataFrame, cost: str, xlabel: str, title: str, path: Path, hue: str | None = None
) -> Path | None:
    """Mean final-epoch test accuracy (± std over seeds) against ``cost``; the Pareto front of each ``hue``.

    ``points`` has columns ``name``, ``cost``, ``mean``, ``std``, ``pareto`` (and ``hue``); None when empty.
    """
    points = points.dropna(subset=[cost, "mean"])
    if points.empty:
        return None
    with plot_style():
        fig, (ax,) = new_figure(6.4, 4.2)
        groups = sorted(points[hue].unique()) if hue else [None]
        palette = sns.color_palette("colorblind", max(len(groups), 1))
        for color, group in zip(palette, groups, strict=False):
            part = points if group is None else points[points[hue] == group]
            _front(ax, part, cost, color)
            _points(ax, part, cost, color, group if group is not None else "Pareto front")
        _x_axis(ax, list(points[cost]))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy, final epoch (%)")
        ax.set_title(title)
        ax.legend(loc="best", frameon=True)
        return save_png(fig, path)


def ablation_figure(ablation: Ablation, path: Path) -> Path:
    """Accuracy by option value, final epoch and best-validation epoch: one line per seed (the pairing),
    mean ± std beside."""
    rows = []
    for value, trials in ablation.groups.items():
        for trial in trials:
            for panel, attribute in (("final epoch", "final_test"), ("best-validation epoch", "best_test")):
                accuracy = getattr(trial, attribute)
                if accuracy is not None:
                    rows.append({"value": str(value), "order": option_order(value), "seed": trial.seed,
                                 "panel": panel, "accuracy": accuracy * 100})  # fmt: skip
    frame = pd.DataFrame(rows)
    order = [str(v) for v in sorted(ablation.groups, key=option_order)]
    with plot_style():
        fig, axes = new_figure(7.2, 3.4, ncols=2)
        seeds = sorted(frame["seed"].unique()) if not frame.empty else []
        palette = dict(zip(seeds, sns.color_palette("colorblind", max(len(seeds), 1)), strict=False))
        for ax, panel in zip(axes, ("final epoch", "best-validation epoch"), strict=True):
            part = frame[frame["panel"] == panel] if not frame.empty else frame
            if part.empty:
                ax.set_title(f"{panel}: no data")
                continue
            x_of = {v: i for i, v in enumerate(order)}
            for seed in seeds:
                mine = part[part["seed"] == seed].sort_values("order")
                xs = [x_of[v] for v in mine["value"]]
                ax.plot(xs, mine["accuracy"], marker="o", markersize=4, linewidth=0.8, alpha=0.8,
                        color=palette[seed], label=f"seed {seed}")  # fmt: skip
            summary = part.groupby("value")["accuracy"].agg(["mean", "std"]).reindex(order)
            ax.errorbar(
                [x + 0.15 for x in range(len(order))], summary["mean"], yerr=summary["std"].fillna(0),
                fmt="D", color="black", markersize=5, capsize=3, label="mean ± std",
            )  # fmt: skip
            ax.set_xticks(range(len(order)), order)
            ax.set_xlim(-0.5, len(order) - 0.5)
            ax.set_xlabel(ablation.option)
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(panel)
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            axes[1].legend(handles, labels, loc="best", fontsize=7)
        fig.suptitle(f"{ablation.option} ({ablation.rest}; {ablation.context})", fontsize=9)
        return save_png(fig, path)
