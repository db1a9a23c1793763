"""The benchmark scripts keep running on a machine without a GPU (smoke runs at toy sizes).

Their figures live in docs/benchmarks.md; here only that each runs end to end and prints the
rows it promises, so a refactor cannot break them silently before the next GPU session.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_gpu_dlrm_dcn_benchmark_runs_on_cpu():
    out = run("bench_gpu_dlrm_dcn.py", "--device", "cpu", "--cap", "500", "--batch", "32", "--steps", "1",
              "--warmup", "1", "--dtypes", "fp32", "--precisions", "fp32", "--profile")
    row = re.search(r"^\| fp32 \| fp32 \| ([\d,]+) \| ([\d.]+) \| ([\d,]+) \| ([\d,]+) \| ([\d.]+)% \|$",
                    out, re.M)
    assert row, out
    # 214 ids x (3 x 128 x 4 + 8) bytes + 26 x 2 x 128 x 4: the formula of the docstring.
    assert int(row.group(3).replace(",", "")) == 214 * (3 * 128 * 4 + 8) + 26 * 2 * 128 * 4
    assert "Self CPU" in out  # --profile's operator table


def test_train_benchmark_prints_every_row_with_a_ratio():
    # One variant, not the default one (fp32 tables, the ATen update: "shardrec step (fp32)"),
    # so that its name is checked too: each variant adds a torchrun launch of its own.
    out = run("bench_train.py", "--steps", "1", "--warmup", "1", "--rounds", "1", "--rows", "500", "--batch", "256",
              "--tables", "fp16", "--update", "fbgemm")
    for name in ("plain PyTorch", "TorchRec stock recipe", "shardrec step (fp32, fp16 tables, FBGEMM update)",
                 "shardrec step (fp32, fp16 tables, FBGEMM update), own process set up as `shardrec train`"):
        assert re.search(rf"^\| {re.escape(name)}.* \| [\d,]+ \| \d+\.\d\dx \|$", out, re.M), (name, out)


def test_table_backward_benchmark_prints_each_kernel_per_updated_row():
    out = run("bench_tbe_backward.py", "--tables", "2", "--rows", "50", "--batch", "64", "--steps", "1",
              "--rounds", "1")
    updated = int(re.search(r"([\d,]+) rows updated a step", out).group(1).replace(",", ""))
    assert 2 * 25 <= updated <= 2 * 50  # 64 uniform draws of 50 ids: about 36 distinct ones per table
    for kernel in ("rowwise_adagrad | fp32 | fbgemm", "rowwise_adagrad | fp16 | fbgemm", "sgd | fp32 | fbgemm",
                   "rowwise_adagrad | fp32 | aten", "rowwise_adagrad | fp16 | aten"):
        row = re.search(rf"^\| {re.escape(kernel)} \| ([\d.]+) \| ([\d,]+) \| (\d+\.\d\d)x \| [\d.]+ \|$", out, re.M)
        assert row, (kernel, out)
        # ns per row = ms x 1e6 / rows, up to the rounding of the printed ms (2 decimals) and
        # of the printed rows (a mean over the batches, to a whole row)
        ns = float(row.group(2).replace(",", ""))
        assert abs(ns - float(row.group(1)) * 1e6 / updated) <= 0.005e6 / updated + ns * 0.5 / updated + 1
    assert re.search(r"^\| rowwise_adagrad \| fp32 \| fbgemm \| .* \| 1\.00x \|", out, re.M), out


def test_tune_grid_splits_list_values_at_semicolons():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from tune_movielens import grid_candidates
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert grid_candidates(["a=1,2", "b=x"]) == [["a=1", "b=x"], ["a=2", "b=x"]]
    assert grid_candidates(["m.cross_pairs=u:g,i:a;", "n=0"]) == [["m.cross_pairs=u:g,i:a", "n=0"]]
    assert grid_candidates(["p=u:g;u:g,i:a"]) == [["p=u:g"], ["p=u:g,i:a"]]
    assert grid_candidates([]) == [[]]


def test_step_profile_by_thread_sums_each_threads_cpu():
    # 30 steps: the kernel counts CPU time in clock ticks (10 ms), so a toy step needs several.
    out = run("profile_step.py", "--by-thread", "--steps", "30", "--warmup", "1", "--rows", "500", "--batch", "256",
              "--threads", "1")
    head = re.search(r"^rank 0: ([\d.]+) ms a step \(wall\), ([\d.]+) ms of CPU$", out, re.M)
    assert head, out
    threads = [float(ms) for ms in re.findall(r"^\| .+ \(\d+\) \| ([\d.]+) \|$", out, re.M)]
    # One process, one compute thread: the rows add up to the total, and the main thread did work.
    assert threads and max(threads) > 0, out
    assert abs(sum(threads) - float(head.group(2))) <= 0.1 * len(threads) + 0.1, out


def _exchange_worker(rank: int, init_file: str, out: str, run_id: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ["TORCHELASTIC_RUN_ID"] = run_id  # names the /dev/shm files, as under torchrun
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    sys.path.insert(0, str(ROOT / "bench"))
    from probe_shm_all_to_all import ShmAllToAll

    exchange, same = ShmAllToAll(rank, 2), []
    g = torch.Generator().manual_seed(rank)
    # Uneven splits, several dtypes, more calls than the two slots: what TorchRec sends.
    for call, dtype in enumerate([torch.bfloat16, torch.int64, torch.float32, torch.int32, torch.bfloat16]):
        sizes = [[3 + call, 5], [2, 7 + call]]  # sizes[r][p]: what rank r sends to rank p
        sent = torch.randint(-1000, 1000, (sum(sizes[rank]),), generator=g).to(dtype)
        splits_out = [sizes[0][rank], sizes[1][rank]]
        expected, got = torch.empty(sum(splits_out), dtype=dtype), torch.empty(sum(splits_out), dtype=dtype)
        dist.all_to_all_single(expected, sent, splits_out, sizes[rank])
        exchange(got, sent, splits_out, sizes[rank], async_op=True).wait()
        same.append(torch.equal(got, expected))
    exchange.close()
    if rank == 0:
        Path(out).write_text(str(same))
    dist.destroy_process_group()


def test_shared_memory_probe_exchanges_what_gloo_does(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "same.txt"
    mp.spawn(_exchange_worker, args=(str(tmp_path / "store"), str(out), f"test-{os.getpid()}"), nprocs=2, join=True)
    assert out.read_text() == str([True] * 5)
