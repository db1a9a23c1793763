"""Decoupled weight decay for fused embedding tables on CPU.

FBGEMM's fused rowwise Adagrad takes `weight_decay` and `weight_decay_mode` (both passed
through the sharder's fused params, see sharding.fused_params), but only its CUDA kernels
apply them: the CPU kernels accept and ignore them (tests/trainer/test_optim.py checks this
premise, so an FBGEMM that starts applying them fails that test instead of decaying twice).
On CPU, this applies FBGEMM's DECOUPLE rule from outside the kernel, after each step: every
row the step updated is scaled by (1 - lr * weight_decay). Which rows were updated is read
off the optimizer's own per-row state: rowwise Adagrad adds the squared gradient to a row's
momentum exactly when the batch touched it. No maintained library does this for TorchRec's
CPU tables, hence the code.

Cost per step: one comparison and one copy of the momentum vector (one float per row) and a
scale of the touched rows; the tables are the local shards each rank owns.
"""

from __future__ import annotations

import torch
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    SplitTableBatchedEmbeddingBagsCodegen,
)
from torch import nn


def fused_tables(model: nn.Module) -> list[SplitTableBatchedEmbeddingBagsCodegen]:
    """FBGEMM's table-batched modules behind the sharded embedding collections of `model`.

    TorchRec keeps them in the sharded modules' lookups, which it does not register as
    submodules, so they are reached through those attributes."""
    found = []
    for module in model.modules():
        for lookup in getattr(module, "_lookups", []) or []:
            for emb in getattr(lookup, "_emb_modules", []) or []:
                tbe = getattr(emb, "_emb_module", None)
                if isinstance(tbe, SplitTableBatchedEmbeddingBagsCodegen) and tbe not in found:
                    found.append(tbe)
    return found


class CpuDecoupledDecay:
    """Call `step()` after every optimizer step (see the module docstring)."""

    def __init__(self, model: nn.Module, weight_decay: float):
        self.weight_decay = weight_decay
        # (weights [rows, dim], momentum [rows], the module) per table shard, as views into
        # FBGEMM's storage: scaling them in place scales the table.
        self.tables = []
        for tbe in fused_tables(model):
            if tbe.weights_host.numel() == 0:  # on a device: the kernel decays it itself
                continue
            for weights, states in zip(tbe.split_embedding_weights(), tbe.split_optimizer_states()):
                self.tables.append((weights, states[0], tbe))
        self.before = [momentum.clone() for _, momentum, _ in self.tables]

    def __bool__(self) -> bool:
        return bool(self.tables)

    @torch.no_grad()
    def step(self) -> None:
        for (weights, momentum, tbe), before in zip(self.tables, self.before):
            touched = momentum != before
            if touched.any():
                weights[touched] *= 1.0 - tbe.get_learning_rate() * self.weight_decay
            before.copy_(momentum)
