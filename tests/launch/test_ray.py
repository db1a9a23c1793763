"""`shardrec ray`: Ray Train workers on a local Ray head (started and stopped here) run the
same `run(cfg)`, reading the training split through Ray Data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_ray_train_workers_on_ray_data(tiny_data, tmp_path):
    pytest.importorskip("ray.train")
    run_dir = tmp_path / "run"
    # A subprocess, so the local Ray head it starts (on 127.0.0.1) stops with it.
    proc = subprocess.run(
        [sys.executable, "-m", "shardrec", "ray", "--config", "tiny", "--num-workers", "2",
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


@pytest.mark.parametrize("overrides, words", [
    (["--ray.num_workers=8"], "8 workers x 1 CPUs (ray.cpus_per_worker) = 8 CPUs, but the Ray cluster has 2"),
    (["--ray.num_workers=2", "--ray.use_gpu=true"], "2 workers with a GPU each, but the Ray cluster has 0 GPUs"),
    (["--ray.num_workers=2", "--dataset.source=ray_data"], "needs a free CPU for Ray Data's read tasks"),
])
def test_preflight_refuses_what_the_cluster_cannot_give(overrides, words):
    from shardrec.configs.errors import UserError
    from shardrec.configs.loader import load_config
    from shardrec.launch.ray_launcher import _preflight

    with pytest.raises(UserError, match=re.escape(words)):
        _preflight(load_config("tiny", overrides), {"CPU": 2.0})
    _preflight(load_config("tiny", ["--ray.num_workers=2", "--ray.cpus_per_worker=0.5",
                                    "--dataset.source=ray_data"]), {"CPU": 2.0})  # fits


def test_a_submitted_job_refuses_relative_paths(monkeypatch):
    from shardrec.configs.errors import UserError
    from shardrec.configs.loader import load_config
    from shardrec.launch.ray_launcher import _check_paths

    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    with pytest.raises(UserError, match="'dataset.path' is the relative path 'data/tiny'"):
        _check_paths(load_config("tiny", ["--run_dir=/shared/runs/x"]))
    with pytest.raises(UserError, match="needs --run-dir or ray.storage_path"):
        _check_paths(load_config("tiny", ["--dataset.path=/shared/data"]))
    _check_paths(load_config("tiny", ["--dataset.path=/shared/data", "--ray.storage_path=/shared/runs"]))


@pytest.mark.slow
def test_asking_for_more_cpus_than_the_cluster_has_fails_fast_in_one_line(tiny_data, tmp_path):
    pytest.importorskip("ray.train")
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "shardrec", "ray", "--config", "tiny", "--num-workers", "2",
         f"--dataset.path={tiny_data}", "--run-dir", str(tmp_path / "run"), "--ray.cpus_per_worker=4"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"},
    )
    assert proc.returncode == 2 and time.monotonic() - start < 30
    errors = [line for line in proc.stderr.splitlines() if line.startswith("shardrec: error:")]
    assert len(errors) == 1 and "= 8 CPUs, but the Ray cluster has" in errors[0]
