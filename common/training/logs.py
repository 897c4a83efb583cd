"""DPO training logs: per-step timing, the log table saved beside each adapter, and the training-curve figure.

``training_log.csv`` / ``training_log.json`` hold one row per logged step (TRL's loss, ``rewards/*``, ``logps/*``,
learning rate, grad norm, tokens, the wall time of the step and any ``eval_*`` metrics of that step);
``plot_training_curves`` draws one or several of those CSVs (stage 1c and 2c side by side in the report).
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

from transformers import TrainerCallback

LOG_CSV = "training_log.csv"
LOG_JSON = "training_log.json"
CURVES_PNG = "training_curves.png"

# Columns first in the table, in this order; any other logged key follows, sorted.
FIRST_COLUMNS = (
    "step", "epoch", "loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected",
    "logps/chosen", "logps/rejected", "learning_rate", "grad_norm", "step_time", "num_tokens",
    "eval_loss", "eval_rewards/margins", "eval_rewards/accuracies",
)
# Keys of the final summary entry that Trainer.train() appends (they describe the run, not a step).
_SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss")


class StepTimer(TrainerCallback):
    """Wall time of each optimiser step (forward + backward of every accumulated micro-batch + the update).

    The mean time of the steps since the previous log is written into that log entry as ``step_time``; the entry
    lives in ``state.log_history``, so it is also kept in checkpoints and survives a resumed run. The process CPU
    time of each step is kept too: on a shared machine it shows what a step costs without the other tenants.
    """

    def __init__(self) -> None:
        self.times: dict[int, float] = {}
        self.cpu_times: dict[int, float] = {}
        self._start: tuple[float, float] | None = None
        self._pending: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = (time.perf_counter(), time.process_time())

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is not None:
            elapsed = time.perf_counter() - self._start[0]
            self.times[state.global_step] = elapsed
            self.cpu_times[state.global_step] = time.process_time() - self._start[1]
            self._pending.append(elapsed)
            self._start = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Trainer.log appends {**logs, "step": ...} to log_history before calling on_log, so the entry to extend is
        # the last one. Only training entries (they carry "loss") get a step time.
        if logs and "loss" in logs and self._pending and state.log_history:
            state.log_history[-1]["step_time"] = sum(self._pending) / len(self._pending)
            self._pending = []

    def summary(self, num_tokens: float | None = None) -> dict[str, float | None]:
        """seconds/step (the first step, which pays one-off costs, is left out when there are 3 or more) and
        tokens/s over the timed steps of this process."""
        steps = sorted(self.times)
        if not steps:
            return {"seconds_per_step": None, "first_step_seconds": None, "cpu_seconds_per_step": None,
                    "tokens_per_second": None}
        steady = steps[1:] if len(steps) >= 3 else steps
        total = sum(self.times.values())
        return {
            "seconds_per_step": sum(self.times[s] for s in steady) / len(steady),
            "first_step_seconds": self.times[steps[0]],
            "cpu_seconds_per_step": sum(self.cpu_times[s] for s in steady) / len(steady),
            "tokens_per_second": (num_tokens / total) if num_tokens and total > 0 else None,
        }


def log_rows(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per step: training and evaluation entries of the same step are merged; the run summary is left
    out (it goes to the metrics)."""
    by_step: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        if any(key in entry for key in _SUMMARY_KEYS):
            continue
        step = int(entry.get("step", 0))
        by_step.setdefault(step, {"step": step}).update(entry)
    return [by_step[step] for step in sorted(by_step)]


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    present = set().union(*(row.keys() for row in rows)) if rows else {"step"}
    first = [name for name in FIRST_COLUMNS if name in present]
    return first + sorted(present - set(first))


def write_training_log(log_history: list[dict[str, Any]], folder: str | Path,
                       metrics: Mapping[str, Any] | None = None) -> Path:
    """Write ``training_log.csv`` and ``training_log.json`` into ``folder``; returns the CSV path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = log_rows(log_history)
    columns = _columns(rows)
    csv_path = folder / LOG_CSV
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({name: row.get(name, "") for name in columns})
    payload = {"rows": rows, "metrics": dict(metrics or {}), "log_history": log_history}
    (folder / LOG_JSON).write_text(json.dumps(payload, indent=2, default=str))
    return csv_path


def read_training_log(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``training_log.csv`` as floats (empty cells are left out)."""
    rows = []
    with Path(path).open(newline="") as handle:
        for raw in csv.DictReader(handle):
            row = {}
            for key, value in raw.items():
                if value in ("", None):
                    continue
                try:
                    row[key] = float(value)
                except ValueError:
                    continue
            rows.append(row)
    return rows


# (title, [(column, line style suffix)]) per panel
_PANELS = (
    ("DPO loss", [("loss", "train"), ("eval_loss", "eval")]),
    ("reward margin (chosen - rejected)", [("rewards/margins", "train"), ("eval_rewards/margins", "eval")]),
    ("reward accuracy", [("rewards/accuracies", "train"), ("eval_rewards/accuracies", "eval")]),
    ("rewards", [("rewards/chosen", "chosen"), ("rewards/rejected", "rejected")]),
    ("learning rate", [("learning_rate", "")]),
    ("gradient norm", [("grad_norm", "")]),  # a machine-independent panel (step time stays in the CSV)
)
_STYLES = {"train": "-", "chosen": "-", "": "-", "eval": "--", "rejected": "--"}


def plot_training_curves(log_csv_paths: Mapping[str, str | Path], out_png: str | Path,
                         title: str = "DPO training curves") -> Path:
    """Plot loss, reward margin/accuracy, chosen/rejected rewards, learning rate and gradient norm against the
    step for every labelled log CSV (e.g. ``{"dpo": ..., "dpo-further": ...}``); returns the PNG path. Step time,
    which depends on the machine, stays in the CSV and off the results figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = {label: read_training_log(path) for label, path in log_csv_paths.items()}
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, series) in zip(axes.flat, _PANELS):
        drawn = False
        for index, (label, rows) in enumerate(logs.items()):
            for column, kind in series:
                points = [(row["step"], row[column]) for row in rows
                          if "step" in row and column in row and math.isfinite(row[column])]
                if not points:
                    continue
                xs, ys = zip(*points)
                name = " ".join(part for part in (label, kind) if part)
                ax.plot(xs, ys, _STYLES.get(kind, "-"), marker="o", markersize=3,
                        color=colors[index % len(colors)], label=name)
                drawn = True
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.suptitle(f"{title}: " + ", ".join(logs))
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
