"""FBGEMM's CPU table backward (gradient + fused optimizer) on this machine, per updated row,
and shardrec's ATen replacement for its row-wise AdaGrad.

    .venv/bin/python bench/bench_tbe_backward.py [--tables 26] [--rows 100000] [--dim 64]
                                                 [--batch 2048] [--threads 1] [--steps 20]

Why this exists: on the project's Intel VM the step of issue 13's DLRM spends about 36 of its
83 ms in `split_embedding_backward_codegen_rowwise_adagrad_cpu` (bench/profile_step.py), where
the AMD VM spent about 10. This script times that kernel alone, one table batch the shape of
issue 13's (26 tables x 100,000 x 64, batch 2,048, one id per table and row, uniform ids),
with FBGEMM's `SplitTableBatchedEmbeddingBagsCodegen` on the CPU, for:
  rowwise_adagrad fp32   EXACT_ROWWISE_ADAGRAD, fp32 tables: the kernel TorchRec's recipe
                         uses (and shardrec with `embeddings.cpu_update: fbgemm`); FBGEMM
                         runs its JIT-generated (asmjit) row-wise AdaGrad kernel here;
  rowwise_adagrad fp16   the same optimizer, fp16 tables (`embeddings.weights_dtype: fp16`):
                         FBGEMM takes its generic compiled loop instead of the JIT kernel;
  sgd fp32               EXACT_SGD, fp32 tables: the generic loop with no optimizer state,
                         the floor for a backward that reads and writes every row;
  rowwise_adagrad fp32,  the same table batches with shardrec's ATen row-wise AdaGrad
    fp16 (aten)          update in their backward (embeddings/cpu_rowwise_adagrad.py,
                         `embeddings.cpu_update: aten`, the default), forward unchanged.
It prints ms per step, ns per updated (unique) row and the speed against rowwise_adagrad
fp32, measured interleaved in one run (best of --rounds).

Then, when a C compiler is present, bench/sse_avx_mix.c: the cost of a legacy-SSE scalar
instruction (movss, addss: what the JIT kernel's per-row part is made of) right after a
256-bit AVX instruction, against the same with `vzeroupper` between them. Where the first is
tens of ns instead of about 1, every row the JIT kernel updates pays that several times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from shardrec.embeddings.cpu_kernel_check import cpu_table_batch
from shardrec.embeddings.cpu_rowwise_adagrad import switch

HERE = Path(__file__).resolve().parent


def time_backward(optimizer: str, weights: str, update: str, tables: int, rows: int, dim: int, batch: int,
                  steps: int, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """(ms per backward, its forward's ms) of one FBGEMM CPU table batch, mean over `steps`;
    `update` "aten": its backward is shardrec's ATen row-wise AdaGrad update instead."""
    tbe = cpu_table_batch(optimizer, weights, tables, rows, dim)
    if update == "aten":
        assert switch(tbe)
    grad = torch.ones(batch, tables * dim)
    for i in range(3):  # warm-up: the JIT kernels are generated on first use
        tbe(*batches[i % len(batches)]).backward(grad)
    forward = backward = 0.0
    for i in range(steps):
        t0 = time.perf_counter()
        out = tbe(*batches[i % len(batches)])
        t1 = time.perf_counter()
        out.backward(grad)
        backward += time.perf_counter() - t1
        forward += t1 - t0
    return backward / steps * 1e3, forward / steps * 1e3


def transition_check() -> str | None:
    """Run bench/sse_avx_mix.c (compiled with cc, when there is one): its one-line result."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or sys.platform != "linux" or os.uname().machine != "x86_64":
        return None
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "sse_avx_mix"
        subprocess.run([cc, "-O2", "-o", str(exe), str(HERE / "sse_avx_mix.c")], check=True)
        return subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tables", type=int, default=26)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    n = args.tables * args.batch
    offsets = torch.arange(n + 1)
    batches = [(torch.randint(0, args.rows, (n,), generator=g), offsets) for _ in range(4)]
    # Rows each step updates: the distinct ids per table, averaged over the batches.
    unique = sum(len(torch.unique(ids.view(args.tables, args.batch)[t])) for ids, _ in batches
                 for t in range(args.tables)) / len(batches)
    runs = [("rowwise_adagrad", "fp32", "fbgemm"), ("rowwise_adagrad", "fp16", "fbgemm"), ("sgd", "fp32", "fbgemm"),
            ("rowwise_adagrad", "fp32", "aten"), ("rowwise_adagrad", "fp16", "aten")]
    best: dict[tuple[str, str, str], tuple[float, float]] = {}
    for _ in range(args.rounds):  # interleaved; the faster round of each kept
        for run in runs:
            t = time_backward(*run, args.tables, args.rows, args.dim, args.batch, args.steps, batches)
            best[run] = min(best.get(run, t), t)
    print(f"FBGEMM CPU table batch: {args.tables} tables x {args.rows:,} x {args.dim}, batch {args.batch}, "
          f"{args.threads} thread(s), {unique:,.0f} rows updated a step; best of {args.rounds} rounds of "
          f"{args.steps} steps")
    print("| optimizer | tables | update | backward ms | ns per updated row | speed vs FBGEMM rowwise_adagrad fp32 "
          "| forward ms |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    base = best[runs[0]][0]
    for (opt, weights, update), (bwd, fwd) in best.items():
        print(f"| {opt} | {weights} | {update} | {bwd:.2f} | {bwd * 1e6 / unique:,.0f} | {base / bwd:.2f}x | {fwd:.2f} |")
    check = transition_check()
    if check:
        print(f"SSE after 256-bit AVX (bench/sse_avx_mix.c): {check}")


if __name__ == "__main__":
    main()
