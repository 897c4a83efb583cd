"""Figures of the stage-3 report (PNG): each metric per variant with error bars, the MI distribution of passing
solutions per variant, and the training curves of the evaluated adapters."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

from common.evaluation.report.stats import RunResult, mean_std, metric_label

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(rows: Sequence[Mapping[str, Any]], names: Sequence[str], out_png: Path, title: str) -> Path:
    """One panel per metric: each variant's mean with a ± sample-std error bar (clipped to the metric's range) and
    its number of runs, and its runs as dots."""
    plt = _pyplot()
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names) + 0.5, 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        for x, variant in enumerate(variants):
            values = [row[name] for row in rows if row["variant"] == variant and row.get(name) is not None]
            mean, std, _ = mean_std(values)
            if mean is None:
                continue
            ax.scatter([x] * len(values), values, s=12, alpha=0.5, color="gray", zorder=2)
            low, high = _bounds(name)  # a ± std bar never reaches below 0 % or above 100 %
            down = min(std or 0.0, mean - low)
            up = min(std or 0.0, high - mean)
            ax.errorbar([x], [mean], yerr=[[max(0.0, down)], [max(0.0, up)]], fmt="o", capsize=6, markersize=7,
                        zorder=3)
            ax.annotate(f"n={len(values)}", (x, mean), textcoords="offset points", xytext=(8, -3), fontsize=7,
                        color="gray")
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels([_short(v) for v in variants], rotation=20)
        ax.set_title(metric_label(name))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_mi_distributions(results: Sequence[RunResult], out_png: Path, title: str) -> Path:
    """Histogram (density, step) of the MI of every passing sample per variant, pooled over runs."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = [x * 2.5 for x in range(41)]
    drawn = False
    for variant in dict.fromkeys(res.variant for res in results):
        mis = [mi for res in results if res.variant == variant for o in res.outcomes for mi in o.passing_mi]
        if not mis:
            continue
        ax.hist(mis, bins=bins, histtype="step", linewidth=1.6, density=True,
                label=f"{_short(variant)} (n={len(mis)}, mean {statistics.fmean(mis):.2f})")
        drawn = True
    if drawn:
        ax.legend(fontsize=8)
        low = min(mi for res in results for o in res.outcomes for mi in o.passing_mi)
        ax.set_xlim(max(0.0, low - 5.0), 100.5)  # MI of working code clusters in 50-100; do not waste the axis
    else:
        ax.text(0.5, 0.5, "no passing solutions", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xlabel("Maintainability Index of passing solutions (radon, 0-100)")
    ax.set_ylabel("density")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_training(logs: Mapping[str, Path], out_png: Path) -> Path:
    """The training curves of the evaluated adapters (``{variant: training_log.csv}``) side by side."""
    from common.training.logs import plot_training_curves

    return Path(plot_training_curves(dict(logs), out_png))


def _bounds(name: str) -> tuple[float, float]:
    """The range a metric can take on the figure's scale (percent for rates, 0-100 for MI, 0-10 for pylint)."""
    if name == "pylint_score":
        return 0.0, 10.0
    if name in ("codebleu", "bertscore_f1"):
        return 0.0, 1.0
    return 0.0, 100.0


def _short(variant: str) -> str:
    return variant if len(variant) <= 18 else "…" + variant[-17:]
