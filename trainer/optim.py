"""The dense optimizer, combined with the fused embedding optimizer TorchRec built, and the
learning-rate schedule that drives both.

The fused (FBGEMM) optimizer already updates the sharded tables inside the backward pass;
`step()` of the combined optimizer steps the dense one and hands the current learning rate
to the FBGEMM kernels, while `state_dict()` holds both, so checkpoints capture the whole
optimizer state.
"""

from __future__ import annotations

import torch
from shardrec.configs.errors import UserError
from shardrec.configs.tree import OptimizerConfig
from torch.optim.lr_scheduler import LambdaLR
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

DENSE_OPTIMIZERS = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam}


def make_optimizer(model: DistributedModelParallel, cfg: OptimizerConfig) -> CombinedOptimizer:
    dense_params = dict(in_backward_optimizer_filter(model.named_parameters()))
    if not dense_params:  # e.g. matrix factorisation: every parameter is a table
        return DenseAndFusedOptimizer([model.fused_optimizer])
    cls = DENSE_OPTIMIZERS[cfg.name]
    fused = fused_available(cls, next(iter(dense_params.values())).device.type)
    dense = KeyedOptimizerWrapper(
        dense_params, lambda params: cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    )
    return DenseAndFusedOptimizer([model.fused_optimizer, dense])


def fused_available(cls: type[torch.optim.Optimizer], device_type: str) -> bool:
    """Whether torch has a fused kernel for `cls` on `device_type`. Fused: one kernel over all
    parameters instead of foreach ops (a few % of a DLRM step on CPU, bench/bench_train.py).
    CPU has it for SGD, Adagrad and Adam; CUDA for SGD and Adam, and refuses a fused Adagrad
    at its first step (seen with torch 2.11 on an H200), so Adagrad there keeps foreach."""
    return device_type == "cpu" or (device_type == "cuda" and cls is not torch.optim.Adagrad)


class DenseAndFusedOptimizer(CombinedOptimizer):
    """CombinedOptimizer whose zero_grad() drops the dense gradients (set_to_none=True, as
    torch.optim's own default) instead of filling them with zeros: TorchRec's pipelines call
    zero_grad() with no argument, and zeroed buffers cost a fill and an add per parameter
    and step that a fresh gradient does not."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=set_to_none)


def lr_multiplier(step: int, cfg: OptimizerConfig) -> float:
    """Factor on every group's base learning rate before optimizer step `step + 1`.

    MLPerf DLRM reference policy: (step + 1) / warmup while warming up, 1 until
    decay_start_step, then ((decay_end - step) / decay_steps) ** power, and 0 after the end.
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.decay_steps and step >= cfg.decay_start_step:
        left = cfg.decay_start_step + cfg.decay_steps - step
        return (max(left, 0) / cfg.decay_steps) ** cfg.decay_power
    return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig) -> LambdaLR:
    """A LambdaLR over all param groups (dense and fused), each keeping its own base lr."""
    if cfg.decay_steps and cfg.decay_start_step < cfg.warmup_steps:
        raise UserError(
            f"config key 'optimizer.decay_start_step' ({cfg.decay_start_step}) must not come before "
            f"the end of the warmup (optimizer.warmup_steps = {cfg.warmup_steps})"
        )
    scheduler = LambdaLR(optimizer, lambda step: lr_multiplier(step, cfg))
    # FBGEMM kernels take their learning rate from the param group only at step(); with no
    # gradients yet this step changes no weight and hands the first scheduled lr over.
    optimizer.step()
    return scheduler
