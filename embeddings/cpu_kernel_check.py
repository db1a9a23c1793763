"""Does this CPU run FBGEMM's fp32 row-wise AdaGrad kernel slowly? A short probe and a note.

FBGEMM updates fp32 tables with row-wise AdaGrad on the CPU through a JIT-generated kernel
that mixes 256-bit AVX with legacy-SSE scalar instructions. Some CPUs charge a transition for
every such instruction (the project's Intel VMs: about 500 ns more per updated row, 44% of a
DLRM step; docs/benchmarks.md, "Where the fp32 step goes on the Intel VM"), others nothing.
fp16 tables take FBGEMM's generic compiled loop instead. shardrec's default,
`embeddings.cpu_update: aten` (embeddings/cpu_rowwise_adagrad.py), runs neither for fp32
tables; a run that asks for FBGEMM's kernel (`cpu_update: fbgemm`) gets this probe: no CPU
flag tells the two kinds of CPU apart, so `slow_rowwise_adagrad_note` times both FBGEMM
kernels on one small table batch (a few tens of ms, once per process) and, when the fp32
kernel is clearly the slower one, names the two ways around it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import torch

# fp32 / fp16 backward time above which the note is given: on the Intel VM this probe finds
# 2.4-2.8 (bench/bench_tbe_backward.py, at the benchmark's full size, 1.8-2.2); where the JIT
# kernel is fast, fp32 tables skip fp16's conversions and the ratio is expected below 1.
SLOW_RATIO = 1.5


def cpu_table_batch(optimizer: str, weights: str, tables: int, rows: int, dim: int) -> torch.nn.Module:
    """FBGEMM's CPU table batch (the module TorchRec's fused CPU kernel wraps): `tables` tables
    of rows x dim stored in `weights` (fp32 / fp16), updated in backward by `optimizer`
    (rowwise_adagrad, the exact variant, or sgd). Called as module(ids, offsets) ->
    pooled (B, tables * dim)."""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType, SparseType
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice,
        EmbeddingLocation,
        SplitTableBatchedEmbeddingBagsCodegen,
    )

    return SplitTableBatchedEmbeddingBagsCodegen(
        [(rows, dim, EmbeddingLocation.HOST, ComputeDevice.CPU)] * tables,
        optimizer={"rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "sgd": EmbOptimType.EXACT_SGD}[optimizer],
        weights_precision={"fp32": SparseType.FP32, "fp16": SparseType.FP16}[weights],
        learning_rate=0.01, eps=1e-8)


def backward_ms(weights: str, tables: int = 4, rows: int = 4096, dim: int = 64, batch: int = 1024,
                steps: int = 3) -> float:
    """Best-of-`steps` ms of one FBGEMM CPU row-wise AdaGrad backward over `tables` tables of
    rows x dim stored in `weights` (fp32 / fp16), batch x 1 uniform ids a table."""
    tbe = cpu_table_batch("rowwise_adagrad", weights, tables, rows, dim)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, rows, (tables * batch,), generator=g)
    offsets = torch.arange(tables * batch + 1)
    grad = torch.ones(batch, tables * dim)
    tbe(ids, offsets).backward(grad)  # generates the JIT kernels
    best = float("inf")
    for _ in range(steps):
        out = tbe(ids, offsets)
        start = time.perf_counter()
        out.backward(grad)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


@functools.cache
def fp32_over_fp16() -> float:
    """The fp32 kernel's backward time over the fp16 tables' one on this CPU (cached). Run
    with torch's global random state saved and restored: a run's model and data order must
    not depend on whether rank 0 probed (FBGEMM 1.8 does not draw from it to initialise the
    probe's tables; nothing promises that)."""
    with torch.random.fork_rng(devices=[]):
        return backward_ms("fp32") / backward_ms("fp16")


def slow_rowwise_adagrad_note(optimizer: str, weights_dtype: str, device_type: str, cpu_update: str = "fbgemm",
                              ratio: Callable[[], float] | None = None) -> str | None:
    """A note when fp32 tables train with FBGEMM's row-wise AdaGrad CPU kernel
    (`cpu_update` "fbgemm") on a CPU where it is at least SLOW_RATIO times slower than the
    fp16 tables' loop (`ratio`, default the probe fp32_over_fp16); None otherwise, without
    probing when the configuration does not use that kernel."""
    if (device_type != "cpu" or optimizer != "rowwise_adagrad" or weights_dtype != "fp32"
            or cpu_update != "fbgemm"):
        return None
    r = (ratio or fp32_over_fp16)()
    if r < SLOW_RATIO:
        return None
    return (f"note: this CPU runs FBGEMM's fp32 row-wise AdaGrad table update {r:.1f}x slower than its fp16-table "
            "loop (a probe of both); --embeddings.cpu_update=aten (shardrec's default) updates fp32 tables without "
            "that kernel, and --embeddings.weights_dtype=fp16 takes the loop, rounding each update to fp16 "
            "(docs/troubleshooting.md)")
