"""`shardrec ray`: Ray Train workers on a local Ray head (started and stopped here) run the
same `run(cfg)`, reading the training split through Ray Data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_ray_train_workers_on_ray_data(tiny_data, tmp_path):
    pytest.importorskip("ray.train")
    run_dir = tmp_path / "run"
    # A subprocess, so the local Ray head it starts (on 127.0.0.1) stops with it.
    proc = subprocess.run(
        [sys.executable, "-m", "launch.cli", "ray", "--config", "tiny", "--num-workers", "2",
         f"--dataset.path={tiny_data}", "--run-dir", str(run_dir), "--dataset.source=ray_data",
         # 2 workers on 2 cores: fractional CPUs leave room for Ray Data's read tasks.
         "--ray.cpus_per_worker=0.5", "--train.num_threads=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    # Ray Data splits 24k rows evenly: 12k per worker, 46 full batches of 256 each.
    assert summary["steps"] == 24_000 // 2 // 256
    assert summary["eval_rows"] == 3_000
    assert summary["auc"] - 0.5 >= 0.5 * (summary["teacher_auc"] - 0.5), summary
    assert f"test AUC {summary['auc']:.4f}" in proc.stdout
