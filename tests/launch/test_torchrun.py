"""`torchrun --nproc_per_node=2 -m launch.torchrun` on CPU: two gloo ranks, one run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def planned(data: str, world_size: int) -> dict[str, tuple]:
    """{table: (sharding type, kernel, ranks)} of `shardrec plan` for the tiny preset on CPU."""
    import torch
    from shardrec.configs.loader import load_config
    from shardrec.data_pipeline.schema import load_schema
    from shardrec.embeddings.plan_report import plan_offline
    from shardrec.trainer.registry import build_model
    from shardrec.trainer.task import ClickTask

    cfg = load_config("tiny", [f"--dataset.path={data}"])
    model = ClickTask(build_model(load_schema(data), cfg.model, torch.device("meta")))
    report = plan_offline(model, cfg.embeddings, world_size, "cpu", None, cfg.train.batch_size)
    return {t.name: (t.sharding_type, t.compute_kernel, t.ranks) for t in report.tables}


@pytest.mark.slow
def test_two_ranks_train_and_evaluate_over_all_rows(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "shardrec.launch.torchrun", "--config", "tiny", f"--dataset.path={tiny_data}",
         "--run-dir", str(run_dir), "--train.num_threads=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # else torchrun prints a banner about it
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    # Each rank trains on its own half: 12k rows / 256 per rank.
    assert summary["steps"] == 12_000 // 256
    assert summary["samples"] == summary["steps"] * 512
    # Evaluation covers the whole test split across both ranks, not rank 0's half.
    assert summary["eval_rows"] == 3_000
    assert summary["auc"] - 0.5 >= 0.5 * (summary["teacher_auc"] - 0.5), summary
    # The planner may replicate small tables (data_parallel, dense kernel); the rest are
    # sharded over the ranks on FBGEMM's fused kernel.
    for table, p in summary["plan"].items():
        expected = "dense" if p["sharding_type"] == "data_parallel" else "fused"
        assert p["compute_kernel"] == expected, (table, p)
    assert any(p["sharding_type"] != "data_parallel" for p in summary["plan"].values())
    # `shardrec plan` shows the plan training used: the same planner inputs (memory per rank,
    # table dtype, batch) give the same sharding type, kernel and ranks for every table.
    assert planned(tiny_data, 2) == {t: (p["sharding_type"], p["compute_kernel"], sorted(set(p["ranks"])))
                                     for t, p in summary["plan"].items()}
    assert (run_dir / "checkpoints" / f"step_{summary['steps']}" / ".metadata").is_file()
    # The console has shardrec's lines only, the summary last; the libraries' warnings (every
    # rank's) are in the run folder's library.log.
    ours = ("note: ", "data ", "step ", "dlrm/", "logloss ", "run folder: ")
    workers = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert [line for line in workers if not line.startswith(ours)] == []
    assert proc.stdout.strip().splitlines()[-1] == f"run folder: {run_dir}"
    library_log = (run_dir / "library.log").read_text()
    assert "rank 0 " in library_log and "rank 1 " in library_log
    assert "Sharding spec not found" in library_log or "data_parallel" not in str(summary["plan"])


@pytest.mark.slow
def test_three_ranks_evaluate_a_split_of_two_row_groups_like_one(tmp_path):
    """Rank 2 holds no row of the test split: it still joins every sharded forward, and the
    AUC over all ranks equals the single-process one."""
    from shardrec.data_pipeline.synth import generate, spec_from_preset

    spec = spec_from_preset("tiny", 6000, seed=4)
    spec.rows_per_file, spec.row_group_rows = 1000, 300
    data = tmp_path / "data"
    schema = generate(spec, data)
    assert schema.splits["test"] == 600  # two row groups of 300
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3",
         "-m", "shardrec.launch.torchrun", "--config", "tiny", f"--dataset.path={data}", "--run-dir", str(run_dir),
         "--train.num_threads=1", "--train.batch_size=64", "--eval.batch_size=128"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 3 and summary["eval_rows"] == 600
    single = subprocess.run([sys.executable, "-m", "shardrec", "eval", "--run-dir", str(run_dir)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    one = json.loads(single.stdout)
    assert one["rows"] == 600 and one["step"] == summary["steps"]
    assert one["auc"] == pytest.approx(summary["auc"], abs=1e-6)
    assert summary["auc"] > 0.55
