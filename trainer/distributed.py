"""Process group and device for this process, whoever launched it.

- torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR: join that group. When its
  agent shares its TCP store with the workers (torch's default), the keys of each restart
  attempt get a prefix of their own: otherwise a restarted rank can read a dead peer's
  address left by the previous attempt and fail in gloo's connectFullMesh ("Connection
  refused"), or hang (seen in 3 of 7 restarts; pytorch/pytorch#135712).
- Ray Train's TorchTrainer has already made the group: use it as is.
- Otherwise (CPU mode, tests): a one-process gloo group on an in-memory store, so TorchRec's
  DistributedModelParallel runs unchanged with no port to open.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta

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


def _torchrun_store(timeout: timedelta) -> dist.Store | None:
    """The agent's store with a per-attempt prefix, when torchrun shares its store."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None  # rank 0 hosts a fresh store each attempt: no stale keys
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          int(os.environ["WORLD_SIZE"]), is_master=False, timeout=timeout)
    return dist.PrefixStore(f"shardrec/attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def process_group_backend(use_cuda: bool) -> str:
    """NCCL for CUDA tensors and, on GPUs too, gloo for CPU ones: the evaluation and
    divergence checks all-reduce small CPU tensors, which an NCCL-only group has no backend
    for. The H200 runs of docs/benchmarks.md ran with this group."""
    return "cpu:gloo,cuda:nccl" if use_cuda else "gloo"


def init_distributed(timeout_minutes: float = 10.0) -> DistEnv:
    """Join or make the process group; collectives fail after `timeout_minutes`."""
    use_cuda = torch.cuda.is_available()
    timeout = timedelta(minutes=timeout_minutes)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    backend = process_group_backend(use_cuda)
    owns = False
    if not dist.is_initialized():
        if "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:
            store = _torchrun_store(timeout)
            if store is not None:
                dist.init_process_group(backend=backend, store=store, rank=int(os.environ["RANK"]),
                                        world_size=int(os.environ["WORLD_SIZE"]), timeout=timeout)
            else:
                dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
        else:
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
        owns = True
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device, dist.get_backend(), owns)


def shutdown(env: DistEnv) -> None:
    """Destroy the group this process made. Call it after the model is gone: sharded tensors
    hold the group, and a gloo group freed only at interpreter exit aborts the process when
    its worker threads are cancelled."""
    from shardrec.embeddings.host_exchange import close_all

    close_all()  # peers waiting in a shared-memory exchange for this rank stop at once
    if env.owns_group and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def on_rank0(env: DistEnv, fn):
    """Run `fn()` on rank 0 only and hand its result to every rank; a `UserError` it raises is
    raised on every rank, so no rank goes on to wait in a collective for one that stopped."""
    from shardrec.configs.errors import UserError

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
