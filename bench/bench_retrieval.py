"""Retrieval models on MovieLens 100K as implicit feedback, full ranking (RecBole's protocol).

    .venv/bin/python bench/bench_retrieval.py                       # mf, lightgcn, ncf, two_tower; 3 seeds
    .venv/bin/python bench/bench_retrieval.py --models mf --seeds 1 --set embeddings.lr=0.05
    .venv/bin/python bench/bench_retrieval.py --models mf,lightgcn --ranks 2     # under torchrun
    .venv/bin/python bench/bench_retrieval.py --models mf --negatives uniform,popularity

Data: every rating a positive, each user's interactions split 8:1:1 at random (seed 0), made
with the `shardrec convert interactions` command in the first lines of
configs/mf_movielens.yaml (run into --data unless it is there). Each model trains with its
configs/<model>_movielens.yaml for --seeds seeds (`train.seed` 0, 1, ...), stops early on
the validation NDCG@10 and is scored on the test split with training and validation items
excluded. Printed: mean and per-seed Recall/NDCG/Precision/Hit/MRR@10, coverage@10 and
novelty@10, and the popularity baseline of the same run. RecBole publishes BPR-MF Recall@10
0.2523 and NDCG@10 0.2920 on this protocol.

--ranks 2 runs each training under `torchrun --nproc_per_node=2` (gloo, one thread a rank,
the same global batch) instead of in one process. --negatives runs each model once per
negative-sampling mode (`retrieval.negatives`) and adds the columns that show the long-tail
trade-off (coverage, novelty = mean self-information of the recommended items, their mean
training count).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("recall@10", "ndcg@10", "precision@10", "hit@10", "mrr@10", "coverage@10", "novelty@10",
           "mean_popularity@10")


def convert_command(data: str) -> list[str]:
    """The preset's own `shardrec convert interactions ...` line, with --out DATA."""
    for line in (ROOT / "configs" / "mf_movielens.yaml").read_text().splitlines():
        if line.startswith("# shardrec convert interactions"):
            words = shlex.split(line[2:])
            return [sys.executable, "-m", *words[:-1], data]
    raise SystemExit("configs/mf_movielens.yaml has no `# shardrec convert interactions` line")


def train(model: str, data: str, seed: int, ranks: int, extra: list[str], work: Path) -> dict:
    run_dir = work / f"{model}-{seed}-{abs(hash(tuple(extra)))}"
    args = ["--config", f"{model}_movielens", f"--dataset.path={data}", "--run-dir", str(run_dir), "--overwrite",
            f"--train.seed={seed}", "--train.progress=false", "--checkpoint.keep=1", *extra]
    if ranks > 1:
        cfg_batch = _preset_batch(model)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "shardrec.launch.torchrun", *args, "--train.num_threads=1",
               f"--train.global_batch_size={cfg_batch}"]
    else:
        cmd = [sys.executable, "-m", "shardrec", "train", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)}\n{proc.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    subprocess.run(["rm", "-rf", str(run_dir)])
    print(f"  {model} seed {seed} {' '.join(extra)}: recall@10 {summary['recall@10']:.4f} "
          f"ndcg@10 {summary['ndcg@10']:.4f} ({summary['steps']} steps, {summary['wall_s']:.0f}s)",
          file=sys.stderr, flush=True)
    return summary


def _preset_batch(model: str) -> int:
    from shardrec.configs.loader import load_config

    return load_config(f"{model}_movielens").train.batch_size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mf,lightgcn,ncf,two_tower")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--ranks", type=int, default=1)
    p.add_argument("--negatives", default="", help="comma-separated retrieval.negatives modes to compare")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE override for every run")
    p.add_argument("--data", default="/tmp/shardrec-ml100k-implicit")
    args = p.parse_args(argv)
    if not (Path(args.data) / "schema.json").is_file():
        subprocess.run(convert_command(args.data), cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="bench_retrieval"))
    variants = [[f"--retrieval.negatives={n}"] for n in args.negatives.split(",")] if args.negatives else [[]]
    rows = []
    for model in args.models.split(","):
        for variant in variants:
            extra = variant + [f"--{s}" for s in args.set]
            runs = [train(model, args.data, seed, args.ranks, extra, work) for seed in range(args.seeds)]
            rows.append((model, " ".join(extra) or "(preset)", runs))
    print(f"\nMovieLens 100K, full ranking, {args.seeds} seed(s), {args.ranks} rank(s); mean (per seed)\n")
    print("| model | settings | " + " | ".join(METRICS) + " | popularity recall@10 / ndcg@10 | best steps |")
    print("| --- | --- | " + " | ".join("---" for _ in METRICS) + " | --- | --- |")
    for model, settings, runs in rows:
        cells = []
        for m in METRICS:
            values = [r[m] for r in runs]
            cell = f"{statistics.mean(values):.4f}"
            if len(values) > 1 and m in ("recall@10", "ndcg@10"):
                cell += " (" + ", ".join(f"{v:.4f}" for v in values) + ")"
            cells.append(cell)
        pop = f"{runs[0]['popularity_recall@10']:.4f} / {runs[0]['popularity_ndcg@10']:.4f}"
        steps = ", ".join(str(r.get("best_step", r["steps"])) for r in runs)
        print(f"| {model} | {settings} | " + " | ".join(cells) + f" | {pop} | {steps} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
