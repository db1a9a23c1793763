"""Row-wise AdaGrad for fused CPU tables, applied in backward with ATen's vectorised ops.

What it replaces, and why. TorchRec's fused CPU tables are FBGEMM table batches
(`SplitTableBatchedEmbeddingBagsCodegen`) whose backward accumulates each touched row's
gradient and applies the optimizer in one kernel, `split_embedding_backward_codegen_
rowwise_adagrad_cpu`. On the CPUs measured here that kernel is most of a DLRM step
(docs/benchmarks.md, "Where the fp32 step goes ..."):
  - fp32 tables take FBGEMM's JIT (asmjit) row-wise AdaGrad kernel, which mixes legacy-SSE
    scalar instructions with 256-bit AVX ones; on the Intel VMs each SSE instruction after
    an AVX one costs ~70-110 ns (bench/sse_avx_mix.c), about 600 ns per updated row;
  - fp16 tables and shared tables take FBGEMM's generic loop, which runs one table after
    another on one thread and converts fp16 one element at a time (~380-450 ns per row).
The same update written as a handful of ATen ops (a sort for the unique rows, gathers and
`index_add_` for their summed gradients, a row norm, gather/scatter of the row state) runs on
all intra-op threads with ATen's vector kernels: 12-18 ms instead of 31-34 ms (fp32) for
issue 13's 26 tables x 2,048 rows on 1-2 cores (bench/bench_tbe_backward.py). No maintained
library offers this for TorchRec's CPU tables, hence the code; the forward stays FBGEMM's.

What stays the same: the module is FBGEMM's own object (its class is swapped for the
subclass below, which overrides `forward` only), so the weights, the optimizer state
(`momentum1`), the learning rate TorchRec's fused optimizer sets, checkpoints and the
sharding are FBGEMM's and TorchRec's. The arithmetic is FBGEMM's EXACT_ROWWISE_ADAGRAD as its
CPU kernels do it (fp16 rows updated in fp32 and rounded to nearest once; weight decay and
max_norm not applied, as FBGEMM's fp32 CPU kernel does not: shardrec's CpuDecoupledDecay
applies decoupled decay from outside, as before):
    g_r = sum of the gradients of row r's lookups in the batch       (D,)
    m_r += mean(g_r ** 2)
    w_r -= lr / (sqrt(m_r) + eps) * g_r
tests/embeddings/test_cpu_rowwise_adagrad.py compares weights and state with FBGEMM's kernels
after several steps (duplicates, mean pooling, bags of several ids, shared tables, mixed dims,
fp16 storage).
"""

from __future__ import annotations

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType, SparseType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import PoolingMode
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    SplitTableBatchedEmbeddingBagsCodegen,
)
from shardrec.embeddings.weight_decay import fused_tables
from torch import nn


def eligible(tbe: SplitTableBatchedEmbeddingBagsCodegen) -> bool:
    """Whether `tbe` is a CPU row-wise AdaGrad table batch this update reproduces: fp32 or
    fp16 weights in host memory, pooled (sum or mean) lookups."""
    return (tbe.optimizer == EmbOptimType.EXACT_ROWWISE_ADAGRAD
            and tbe.weights_precision in (SparseType.FP32, SparseType.FP16)
            and tbe.pooling_mode in (PoolingMode.SUM, PoolingMode.MEAN)
            and tbe.weights_host.numel() > 0 and tbe.weights_dev.numel() == 0 and tbe.weights_uvm.numel() == 0)


def use_aten_update(model: nn.Module) -> int:
    """Switch every eligible FBGEMM table batch of `model` (a DMP-sharded model) to the ATen
    update; returns how many were switched."""
    return sum(switch(tbe) for tbe in fused_tables(model))


def switch(tbe: SplitTableBatchedEmbeddingBagsCodegen) -> bool:
    """Switch one table batch to the ATen update if it is eligible; whether it now uses it."""
    if isinstance(tbe, AtenRowwiseAdagradTables):
        return True
    if not eligible(tbe):
        return False
    # TorchRec builds the FBGEMM module inside its sharded lookups and offers no hook to
    # choose its class; swapping the class of the built object overrides `forward` and
    # keeps every tensor, buffer and reference TorchRec holds to it.
    tbe.__class__ = AtenRowwiseAdagradTables
    tbe._aten_layout = _Layout(tbe)
    return True


class _Layout:
    """Where each feature's rows live in the flat host weights, precomputed once.

    Per feature (F of them, several may share a table): dims, d_offsets (its columns of the
    pooled output), weights_offsets and momentum_offsets (where its table starts in the flat
    weights and row-wise state), rows and table_of (its table's rows and index). When every
    table has one dim D and its state starts at weights_offset / D (FBGEMM's layout for a
    one-dim batch), one (rows_total, D) view addresses every row: `uniform`, and row_base
    (F,) is each feature's first row in it, so one pass updates all tables.
    """

    def __init__(self, tbe: SplitTableBatchedEmbeddingBagsCodegen):
        d_offsets = tbe.D_offsets.tolist()
        self.dims = [b - a for a, b in zip(d_offsets, d_offsets[1:])]
        self.d_offsets = d_offsets
        self.weights_offsets = tbe.weights_offsets.tolist()
        self.momentum_offsets = tbe.momentum1_offsets.tolist()
        self.table_of = list(tbe.feature_table_map)
        self.rows = [tbe.embedding_specs[t][0] for t in self.table_of]  # per feature
        D = self.dims[0]
        self.uniform = (all(d == D for d in self.dims)
                        and all(w == m * D for w, m in zip(self.weights_offsets, self.momentum_offsets)))
        self.row_base = torch.tensor(self.momentum_offsets, dtype=torch.int64)


class AtenRowwiseAdagradTables(SplitTableBatchedEmbeddingBagsCodegen):
    """FBGEMM's table batch with its CPU backward replaced by the ATen row-wise AdaGrad
    update (module docstring). Never constructed: `use_aten_update` swaps an existing
    module's class. Anything the update does not cover (per-sample weights, variable batch
    sizes per feature, FBGEMM's extra inputs, no grad) runs FBGEMM's own forward/backward."""

    _aten_layout: _Layout

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, per_sample_weights: torch.Tensor | None = None,
                feature_requires_grad: torch.Tensor | None = None,
                batch_size_per_feature_per_rank: list[list[int]] | None = None, **extra) -> torch.Tensor:
        if (per_sample_weights is not None or batch_size_per_feature_per_rank is not None
                or any(v is not None for v in extra.values()) or not torch.is_grad_enabled()):
            return super().forward(indices, offsets, per_sample_weights, feature_requires_grad,
                                   batch_size_per_feature_per_rank, **extra)
        return _LookupWithAtenUpdate.apply(self.placeholder_autograd_tensor, self, indices, offsets)


class _LookupWithAtenUpdate(torch.autograd.Function):
    """Forward: FBGEMM's pooled lookup, (B, total_D). Backward: the row-wise AdaGrad update
    of the rows the batch looked up; no gradient flows to any input."""

    @staticmethod
    def forward(ctx, placeholder: torch.Tensor, tbe: AtenRowwiseAdagradTables, indices: torch.Tensor,
                offsets: torch.Tensor) -> torch.Tensor:
        # Autograd is off inside Function.forward, so FBGEMM computes the lookup (and runs its
        # bounds check and iteration counters) without recording its own backward.
        pooled = SplitTableBatchedEmbeddingBagsCodegen.forward(tbe, indices, offsets)
        ctx.tbe = tbe
        ctx.save_for_backward(indices, offsets)
        return pooled

    @staticmethod
    @torch.no_grad()
    def backward(ctx, grad: torch.Tensor):
        indices, offsets = ctx.saved_tensors
        rowwise_adagrad_update(ctx.tbe, indices, offsets, grad)
        return None, None, None, None


def rowwise_adagrad_update(tbe: AtenRowwiseAdagradTables, indices: torch.Tensor, offsets: torch.Tensor,
                           grad: torch.Tensor) -> None:
    """Apply one row-wise AdaGrad step to the rows of `tbe` looked up by (indices, offsets):
    indices (N,) row ids feature by feature, offsets (F * B + 1,) bag boundaries (bag f * B + b
    is feature f of sample b), grad (B, total_D) the gradient of the pooled output."""
    layout = tbe._aten_layout
    F = len(layout.dims)
    B = (offsets.numel() - 1) // F
    grad = grad.float().contiguous()
    lengths = offsets[1:] - offsets[:-1]
    one_id_per_bag = indices.numel() == F * B and bool((lengths == 1).all())
    mean = tbe.pooling_mode == PoolingMode.MEAN
    weights, momentum = tbe.weights_host, tbe.momentum1_host
    lr, eps = tbe.learning_rate_tensor, tbe.optimizer_args.eps
    if layout.uniform:
        D = layout.dims[0]
        if one_id_per_bag:
            rows = indices.long() + layout.row_base.repeat_interleave(B)
            # Lookup k = f * B + b takes the gradient of row (b, f) of grad viewed as
            # (B * F, D): reorder the small id vector, not the (N, D) gradient.
            rows = rows.view(F, B).t().reshape(-1)
            lookup_grads = grad.view(B * F, D)
        else:
            bag = torch.repeat_interleave(torch.arange(F * B), lengths)  # (N,)
            rows = indices.long() + layout.row_base[bag // B]  # bag f * B + b is feature f
            lookup_grads = grad.view(B * F, D).index_select(0, (bag % B) * F + bag // B)
            if mean:
                lookup_grads = lookup_grads / lengths[bag].clamp(min=1).unsqueeze(1)
        _update_rows(weights.view(-1, D), momentum, rows, lookup_grads, lr, eps)
        return
    # Several dims in one batch: one table at a time, each through its own (rows, D) view,
    # the lookups of every feature that shares it together.
    for table in sorted(set(layout.table_of)):
        features = [f for f, t in enumerate(layout.table_of) if t == table]
        f0 = features[0]
        D = layout.dims[f0]
        start = layout.weights_offsets[f0]
        table_weights = weights[start:start + layout.rows[f0] * D].view(-1, D)
        table_momentum = momentum[layout.momentum_offsets[f0]:layout.momentum_offsets[f0] + layout.rows[f0]]
        rows, grads = [], []
        for f in features:
            lo, hi = int(offsets[f * B]), int(offsets[(f + 1) * B])
            feature_lengths = lengths[f * B:(f + 1) * B]
            sample = torch.repeat_interleave(torch.arange(B), feature_lengths)
            g = grad[:, layout.d_offsets[f]:layout.d_offsets[f] + D].index_select(0, sample)
            if mean:
                g = g / feature_lengths[sample].clamp(min=1).unsqueeze(1)
            rows.append(indices[lo:hi].long())
            grads.append(g)
        _update_rows(table_weights, table_momentum, torch.cat(rows), torch.cat(grads), lr, eps)


def _update_rows(weights: torch.Tensor, momentum: torch.Tensor, rows: torch.Tensor, lookup_grads: torch.Tensor,
                 lr: torch.Tensor, eps: float) -> None:
    """weights (R, D) and momentum (R,) in place; rows (N,) the row of each lookup, whose
    gradient is lookup_grads (N, D). Rows looked up several times get their summed gradient."""
    if rows.numel() == 0:
        return
    unique, inverse = torch.unique(rows, return_inverse=True)  # sorted: (U,), (N,)
    grads = _summed_per_row(lookup_grads, inverse, unique.numel())
    # FBGEMM adds the mean of the squared gradient to the row's state.
    state = momentum.index_select(0, unique).add_(
        torch.linalg.vector_norm(grads, dim=1).square_().div_(weights.shape[1]))
    momentum.index_copy_(0, unique, state)
    step = state.sqrt_().add_(eps).reciprocal_().mul_(-lr)  # -lr / (sqrt(m) + eps), (U,)
    delta = grads.mul_(step.unsqueeze(1))
    if weights.dtype == torch.float32:
        weights.index_add_(0, unique, delta)
    else:  # fp16 storage: each row updated in fp32 and rounded once to nearest, as FBGEMM's CPU loop does
        # The rows are moved as int64 words (the same bits, 4 fp16 values a word; int16 when
        # the dim is not a multiple of 4): ATen's index_copy_ and index_select work element by
        # element, so fewer, wider elements move the same rows several times faster.
        word = torch.int64 if weights.shape[1] % 4 == 0 else torch.int16
        bits = weights.view(word)
        updated = bits.index_select(0, unique).view(weights.dtype).float().add_(delta).to(weights.dtype)
        bits.index_copy_(0, unique, updated.view(word))


def _summed_per_row(lookup_grads: torch.Tensor, inverse: torch.Tensor, unique: int) -> torch.Tensor:
    """(U, D): the sum of the lookups' gradients (N, D) per row, inverse (N,) each lookup's row.

    Most rows of a large table are looked up once per batch, so each row's first lookup is
    gathered (one pass over the gradients) and only the repeats are added to it: zeroing a
    (U, D) buffer and adding all N lookups into it costs two more passes over that memory
    (2-4x slower here, bench/bench_tbe_backward.py). Repeats are added in batch order, as
    FBGEMM's kernel does."""
    n = inverse.numel()
    position = torch.arange(n)
    first = torch.full((unique,), n, dtype=torch.int64).scatter_reduce_(0, inverse, position, "amin")
    grads = lookup_grads.index_select(0, first)
    repeats = (position != first.index_select(0, inverse)).nonzero().squeeze(1)
    if repeats.numel():
        grads.index_add_(0, inverse.index_select(0, repeats), lookup_grads.index_select(0, repeats))
    return grads
