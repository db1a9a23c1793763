"""The dense optimizer, combined with the fused embedding optimizer TorchRec built.

The fused (FBGEMM) optimizer already updates the sharded tables inside the backward pass;
`step()` of the combined optimizer steps the dense one and is a no-op for the fused part,
while `state_dict()` holds both, so checkpoints capture the whole optimizer state.
"""

from __future__ import annotations

import torch
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from configs.tree import OptimizerConfig

DENSE_OPTIMIZERS = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam}


def make_optimizer(model: DistributedModelParallel, cfg: OptimizerConfig) -> CombinedOptimizer:
    dense_params = dict(in_backward_optimizer_filter(model.named_parameters()))
    cls = DENSE_OPTIMIZERS[cfg.name]
    dense = KeyedOptimizerWrapper(
        dense_params, lambda params: cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    )
    return CombinedOptimizer([model.fused_optimizer, dense])
