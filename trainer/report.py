"""Compare finished (or running) runs: loss and AUC curves in one PNG, final metrics as markdown.

    runs = [load_run(p) for p in ["runs/a", "runs/b"]]
    plot_runs(runs, "report.png"); print(metrics_table(runs))

Reads only what `RunDir` writes (metrics.jsonl, summary.json, config.yaml), so it works on
a run folder copied from a cluster without torch or TensorBoard.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardrec.configs.errors import UserError

# Columns of the markdown table: (header, summary key, format).
COLUMNS = [
    ("model", "model", "{}"), ("world", "world_size", "{}"), ("steps", "steps", "{:,}"),
    ("samples/s", "samples_per_s", "{:,.0f}"), ("AUC", "auc", "{:.4f}"), ("logloss", "logloss", "{:.4f}"),
    ("NE", "ne", "{:.4f}"), ("calibration", "calibration", "{:.3f}"), ("accuracy", "accuracy", "{:.4f}"),
    ("teacher AUC", "teacher_auc", "{:.4f}"),
]


@dataclass
class RunRecords:
    path: Path
    name: str
    train: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def final(self) -> dict[str, Any]:
        """summary.json, or for a run without one yet its last eval and train records."""
        if self.summary:
            return self.summary
        out: dict[str, Any] = {}
        if self.train:
            out.update(steps=self.train[-1].get("step"), samples_per_s=self.train[-1].get("samples_per_s"))
        if self.evals:
            out.update({k: v for k, v in self.evals[-1].items() if k not in ("event", "step")})
        return out


def has_records(root: Path) -> bool:
    """A folder a run has written records into (metrics.jsonl or summary.json)."""
    return (root / "metrics.jsonl").is_file() or (root / "summary.json").is_file()


def load_run(path: str | Path) -> RunRecords:
    """Read a run folder; a path that is not one is a one-line UserError."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"run folder '{root}' does not exist")
    metrics, summary = root / "metrics.jsonl", root / "summary.json"
    if not has_records(root):
        raise UserError(f"'{root}' is not a run folder (no metrics.jsonl or summary.json; "
                        "give a --run-dir written by `shardrec train`)")
    run = RunRecords(root, root.resolve().name)
    if metrics.is_file():
        for n, line in enumerate(metrics.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{metrics}:{n}: not a JSON line") from None
            if record.get("event") == "train":
                run.train.append(record)
            elif record.get("event") == "eval":
                run.evals.append(record)
    if summary.is_file():
        try:
            run.summary = json.loads(summary.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{summary}: not valid JSON") from None
    return run


def _names(runs: list[RunRecords]) -> list[str]:
    """Folder names, or whole paths where two runs share a name."""
    names = [r.name for r in runs]
    return [str(r.path) if names.count(r.name) > 1 else r.name for r in runs]


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def metrics_table(runs: list[RunRecords]) -> str:
    """A markdown table of each run's final metrics."""
    lines = ["| run | " + " | ".join(h for h, _, _ in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for name, run in zip(_names(runs), runs):
        final = run.final()
        cells = [_cell(final.get(key), fmt) for _, key, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def final_split(run: RunRecords) -> str:
    """The split scored once at the end of training (eval.split): summary's eval_split."""
    return run.summary.get("eval_split") or (run.evals[-1].get("split", "test") if run.evals else "test")


def eval_series(run: RunRecords, key: str) -> dict[str, tuple[list[int], list[float]]]:
    """{split: (steps, values of `key`)} of the run's evaluations, one series per split, so
    validation during training and the final test score are never joined into one line."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for r in run.evals:
        value = r.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        steps, values = out.setdefault(r.get("split", "eval"), ([], []))
        steps.append(r["step"])
        values.append(value)
    return out


def plot_runs(runs: list[RunRecords], out: str | Path) -> Path:
    """Write a PNG: train loss (and eval logloss) per step left, eval AUC per step right."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only, also on a headless cluster node
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for i, (name, run) in enumerate(zip(_names(runs), runs)):
        color = f"C{i % 10}"
        if run.train:
            ax_loss.plot([r["step"] for r in run.train], [r["loss"] for r in run.train],
                         color=color, label=f"{name} train")
        for split, (steps, values) in eval_series(run, "logloss").items():
            style = "*" if split == final_split(run) else "o--"
            ax_loss.plot(steps, values, style, color=color, markersize=12 if style == "*" else 6,
                         label=f"{name} {split} logloss")
        for split, (steps, values) in eval_series(run, "auc").items():
            # The final test score is a point of its own: joined to the validation curve it
            # would read as the run collapsing (or jumping) at its last step.
            style = "*" if split == final_split(run) else "o-"
            ax_auc.plot(steps, values, style, color=color, markersize=12 if style == "*" else 6,
                        label=f"{name} {split}")
        teacher = run.summary.get("teacher_auc")
        if teacher is not None:
            ax_auc.axhline(teacher, color=color, linestyle=":", linewidth=1, label=f"{name} teacher")
    ax_loss.set(title="loss", xlabel="step", ylabel="logloss")
    ax_auc.set(title="eval AUC", xlabel="step", ylabel="AUC")
    for ax in (ax_loss, ax_auc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def write_report(run_dirs: list[str], out: str | Path | None = None,
                 skipped: list[str] | None = None) -> tuple[Path, Path, str]:
    """Plot and tabulate runs; returns (png, md, table). Default out: RUN/report.png for one
    run, ./report.png for several. A folder that exists but holds no metrics (a run that
    failed before its first step) is left out and named in `skipped`; a path that does not
    exist is an error."""
    runs = []
    for p in run_dirs:
        if Path(p).is_dir() and not has_records(Path(p)):
            if skipped is not None:
                skipped.append(str(p))
                continue
        runs.append(load_run(p))
    if not runs:
        raise UserError(f"none of {', '.join(run_dirs)} holds metrics.jsonl or summary.json: no run to report")
    png = Path(out) if out else (runs[0].path / "report.png" if len(runs) == 1 else Path("report.png"))
    if png.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, got '{png}'")
    table = metrics_table(runs)
    plot_runs(runs, png)
    md = png.with_suffix(".md")
    md.write_text(f"![loss and AUC]({png.name})\n\n{table}")
    return png, md, table
