"""Fault-injection loop: kill a worker of a running job N times, count the recoveries.

    .venv/bin/python bench/fault_loop.py [--launcher torchrun|ray] [--runs 10]

Each run is the job of tests/launch/test_fault_tolerance.py (tiny preset, 2 ranks, 3 epochs,
a checkpoint every 10 steps): started, one worker SIGKILLed right after the first
checkpoint (alternating rank 1 and rank 0 under torchrun; any Ray Train worker under Ray),
and counted as recovered when it exits 0 and its final model and optimizer tensors equal
an uninterrupted run's to 1e-6. Results go into docs/reliability.md by hand, with this command.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "launch")]

from faults import final_tensors, max_difference  # noqa: E402
from shardrec.data_pipeline.synth import generate, spec_from_preset  # noqa: E402
from test_fault_tolerance import ray_job, run_killing_one_worker, torchrun  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--launcher", choices=["torchrun", "ray"], default="torchrun")
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shardrec-faults-"))
    data = work / "data"
    generate(spec_from_preset("tiny", 30_000, seed=3), data)
    command = torchrun if args.launcher == "torchrun" else ray_job
    reference = work / "reference"
    proc = subprocess.run(command(str(data), reference), cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        print(proc.stderr[-3000:])
        return 1
    expected = final_tensors(reference, work)
    recovered = 0
    for i in range(args.runs):
        run_dir, start = work / f"run{i}", time.monotonic()
        match = {"env": {"RANK": str(1 - i % 2)}} if args.launcher == "torchrun" else {"title": "RayTrainWorker"}
        rc, _, err = run_killing_one_worker(command(str(data), run_dir), run_dir, **match)
        diff = max_difference(final_tensors(run_dir, work), expected) if rc == 0 else float("nan")
        ok = rc == 0 and diff <= 1e-6
        recovered += ok
        print(f"run {i + 1}: {'recovered' if ok else 'FAILED'} (exit {rc}, max |diff| {diff:.2e}, "
              f"{time.monotonic() - start:.0f} s){'' if ok else ' ' + err[-500:]}", flush=True)
    print(f"{args.launcher}: {recovered} of {args.runs} recovered with equal weights")
    return 0 if recovered == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
