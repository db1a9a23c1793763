"""A lost worker costs a restart, not the job: torchrun (--max-restarts) and Ray Train
(ray.max_failures) bring the job back from its newest checkpoint, and it ends with the same
weights as a run that was never interrupted. bench/fault_loop.py repeats these 10 times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from faults import final_tensors, kill_worker, max_difference, wait_for_checkpoint

ROOT = Path(__file__).resolve().parents[2]
# 3 epochs of 46 steps at 2 ranks, a checkpoint every 10: slow enough to kill a worker mid-run.
JOB = ["--config", "tiny", "--train.num_threads=1", "--train.epochs=3", "--checkpoint.every_steps=10",
       "--train.log_every=10"]
QUIET = {**os.environ, "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"}


def torchrun(data: str, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "--max-restarts=3", "-m", "shardrec.launch.torchrun", *JOB, f"--dataset.path={data}", "--run-dir", str(run_dir)]


def ray_job(data: str, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "shardrec", "ray", *JOB, "--num-workers", "2", f"--dataset.path={data}",
            "--run-dir", str(run_dir), "--ray.cpus_per_worker=0.5"]


def run_killing_one_worker(cmd: list[str], run_dir: Path, timeout: float = 500, **match):
    """Start the job, SIGKILL one worker right after the first checkpoint, wait for the end."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=QUIET)
    try:
        wait_for_checkpoint(run_dir, proc)
        kill_worker(proc.pid, **match)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def assert_recovered(run_dir: Path, reference: Path, tmp: Path, rc: int, err: str) -> None:
    assert rc == 0, err[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == json.loads((reference / "summary.json").read_text())["steps"] == 3 * 46
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r["event"] == "resume" for r in records), "the job was not resumed"
    steps = [r["step"] for r in records if r["event"] == "train"]
    assert steps == sorted(set(steps)), "metrics.jsonl repeats steps"
    assert max_difference(final_tensors(run_dir, tmp), final_tensors(reference, tmp)) <= 1e-6


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """The same job at 2 ranks, never interrupted."""
    run_dir = tmp_path_factory.mktemp("faults") / "reference"
    proc = subprocess.run(torchrun(tiny_data, run_dir), cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_torchrun_restarts_a_killed_worker_and_ends_with_the_same_weights(tiny_data, tmp_path, reference):
    run_dir = tmp_path / "run"
    rc, _, err = run_killing_one_worker(torchrun(tiny_data, run_dir), run_dir, env={"RANK": "1"})
    assert_recovered(run_dir, reference, tmp_path, rc, err)


@pytest.mark.slow
def test_ray_restarts_a_killed_worker_and_ends_with_the_same_weights(tiny_data, tmp_path, reference):
    pytest.importorskip("ray.train")
    run_dir = tmp_path / "run"
    # Ray Train's workers are actors in processes of the local Ray instance this command starts.
    rc, _, err = run_killing_one_worker(ray_job(tiny_data, run_dir), run_dir, title="RayTrainWorker")
    assert_recovered(run_dir, reference, tmp_path, rc, err)
