"""Tune MovieLens 100K presets: each candidate setting over 3 seeds, chosen by validation AUC.

    .venv/bin/python bench/tune_movielens.py --models deepfm,dcnv2 \\
        --grid "embeddings.weight_decay=0,0.01,0.03" --grid "embeddings.lr=0.03,0.05"

Every run uses the model's `configs/<model>_movielens.yaml` plus the candidate's overrides and
`--train.seed=S` (S = 0, 1, 2), with early stopping on the validation split's AUC as the preset
has it. A candidate's score is its mean best validation AUC over the seeds; the table also
shows its mean test AUC (of the best checkpoints), which is what docs/benchmarks.md reports for
the chosen candidate, never what chooses it. Runs go `--jobs` at a time, one thread each.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT.parent / "shared" / "data" / "movielens_100k"


def one_run(model: str, overrides: list[str], seed: int, data: str, work: Path) -> dict:
    run_dir = work / f"{model}-{abs(hash((tuple(overrides), seed)))}"
    cmd = [sys.executable, "-m", "shardrec", "train", "--config", f"{model}_movielens", f"--dataset.path={data}",
           "--run-dir", str(run_dir), "--overwrite", f"--train.seed={seed}", "--train.progress=false",
           "--checkpoint.keep=1", *[f"--{o}" for o in overrides]]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)}\n{proc.stderr[-2000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    subprocess.run(["rm", "-rf", str(run_dir)])
    return summary


def grid_candidates(grid: list[str]) -> list[list[str]]:
    """Every combination of the --grid axes, as override lists ("key=value", no dashes).

    An axis's values are split at ";" when it has one (a list value holds commas: "a,b;" is
    one candidate), else at ","."""
    axes = []
    for g in grid:
        key, sep, values = g.partition("=")
        if not sep or not key:
            raise SystemExit(f"--grid {g!r}: expected KEY=V1,V2,...")
        axes.append([f"{key}={v}" for v in (values.split(";") if ";" in values else values.split(",")) if v])
    return [list(c) for c in itertools.product(*axes)] or [[]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", required=True, help="comma-separated model names")
    p.add_argument("--grid", action="append", default=[],
                   help="KEY=V1,V2,... or KEY=V1;V2;... when a value is a list ('a,b;' for one); repeatable: "
                   "the product is tried")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--data", default="", help="a converted MovieLens 100K folder (default: convert to a temp folder)")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tune_ml"))
    data = args.data
    if not data:
        data = str(work / "ml100k")
        subprocess.run([sys.executable, "-m", "shardrec", "convert", "movielens", "--input", str(RAW), "--out", data],
                       check=True, capture_output=True, cwd=ROOT)
    candidates = grid_candidates(args.grid)
    jobs = [(m, c, s) for m in args.models.split(",") for c in candidates for s in range(args.seeds)]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda j: one_run(*j, data, work), jobs))
    print("| model | overrides | valid AUC (mean) | test AUC (mean) | test AUC per seed | steps |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = {}
    for (model, cand, _), summary in zip(jobs, results):
        rows.setdefault((model, tuple(cand)), []).append(summary)
    for (model, cand), runs in rows.items():
        valid = statistics.mean(r.get("best_value", float("nan")) for r in runs)
        test = statistics.mean(r["auc"] for r in runs)
        per_seed = ", ".join(f"{r['auc']:.4f}" for r in runs)
        steps = ", ".join(str(r.get("best_step", r["steps"])) for r in runs)
        print(f"| {model} | {' '.join(cand) or '(preset)'} | {valid:.4f} | {test:.4f} | {per_seed} | {steps} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
