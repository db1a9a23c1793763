"""DDP's all-reduce of dense gradients through a HostExchange (host_exchange.py says why)."""

from __future__ import annotations

import torch
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks


def allreduce_hook(exchange, bucket):  # no annotations: DDP compares them with its classes, not strings
    """DDP communication hook (HostExchange, dist.GradBucket) -> Future of the bucket's
    gradients, averaged over the ranks through the
    exchange. Each rank writes its bucket once and reads every peer's; sums go in rank
    order (for 2 ranks either order: a + b == b + a), so every rank gets the same bits.
    A bucket too large for the slots goes through DDP's own all-reduce hook instead."""
    grads = bucket.buffer()
    world, me = exchange.world, exchange.rank
    size = grads.numel() * grads.element_size()
    nbytes = [[0 if src == dst else size for dst in range(world)] for src in range(world)]
    if not exchange.fits(nbytes, shared=True):
        return default_hooks.allreduce_hook(exchange.pg, bucket)
    parts: dict[int, torch.Tensor] = {}

    def write(_, block):
        block.view(grads.dtype).copy_(grads)

    def read(p, block):
        parts[p] = block.view(grads.dtype)

    exchange.exchange(nbytes, write, read, shared=True)
    if world == 2:
        grads.add_(parts[1 - me])
    else:
        total = (grads if me == 0 else parts[0]).clone()
        for r in range(1, world):
            total.add_(grads if r == me else parts[r])
        grads.copy_(total)
    grads.div_(world)
    done: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    done.set_result(grads)
    return done
