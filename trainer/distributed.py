"""Process group and device for this process, whoever launched it.

- torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR: join that group (env://).
- Ray Train's TorchTrainer has already made the group: use it as is.
- Otherwise (CPU mode, tests): a one-process gloo group on an in-memory store, so TorchRec's
  DistributedModelParallel runs unchanged with no port to open.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    owns_group: bool  # True when this module created the group and must destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistEnv:
    use_cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    backend = "nccl" if use_cuda else "gloo"
    owns = False
    if not dist.is_initialized():
        if "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend=backend, init_method="env://")
        else:
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
        owns = True
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device, dist.get_backend(), owns)


def shutdown(env: DistEnv) -> None:
    """Destroy the group this process made. Call it after the model is gone: sharded tensors
    hold the group, and a gloo group freed only at interpreter exit aborts the process when
    its worker threads are cancelled."""
    if env.owns_group and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def on_rank0(env: DistEnv, fn):
    """Run `fn()` on rank 0 only and hand its result to every rank; a `UserError` it raises is
    raised on every rank, so no rank goes on to wait in a collective for one that stopped."""
    from configs.errors import UserError

    result: list = [None, None]
    if env.is_main:
        try:
            result[0] = fn()
        except UserError as e:
            result[1] = str(e)
    if env.world_size > 1:
        dist.broadcast_object_list(result, src=0)
    if result[1] is not None:
        raise UserError(result[1])
    return result[0]
