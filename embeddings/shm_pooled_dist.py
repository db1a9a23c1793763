"""Pooled embeddings of table-wise (and column-wise) tables sent to the ranks that own the
samples through a HostExchange (host_exchange.py says why): TorchRec's TwPooledEmbeddingDist
with the codec's casts and the gradient's division fused into the one write and one read
each exchanged value gets, forward and backward.
"""

from __future__ import annotations

import torch
from shardrec.embeddings.comm_codec import BF16CommCodec, BF16KeptCommCodec
from torch import nn
from torchrec.distributed.comm_ops import get_gradient_division
from torchrec.distributed.sharding.tw_sharding import TwPooledEmbeddingDist
from torchrec.distributed.types import NoWait


class SharedMemoryPooledDist(nn.Module):
    """TorchRec's TwPooledEmbeddingDist (`original`) through a HostExchange: forward takes
    this rank's tables' pooled embeddings for every rank's samples, (sum(B_r), D_me), rows
    rank after rank, and returns (as an Awaitable) this rank's samples' embeddings from every
    rank's tables, (B_me, sum(D_r)), columns rank after rank. Sent in `comm_dtype` (the
    codec's bf16, or the embeddings' own dtype), returned in `out_dtype` (bf16 where the
    codec keeps it so: BF16KeptCommCodec); gradients travel back in `grad_dtype`."""

    def __init__(self, original: TwPooledEmbeddingDist, exchange, comm_dtype: torch.dtype | None,
                 out_dtype: torch.dtype | None, grad_dtype: torch.dtype | None):
        super().__init__()
        self.fallback = original
        self.exchange = exchange
        self.dims = list(original._dim_sum_per_rank)
        self.comm_dtype, self.out_dtype, self.grad_dtype = comm_dtype, out_dtype, grad_dtype

    def forward(self, local_embs: torch.Tensor, sharding_ctx=None):
        world = self.exchange.world
        if sharding_ctx is not None and sharding_ctx.variable_batch_per_feature:
            return self.fallback(local_embs, sharding_ctx)
        batches = list(sharding_ctx.batch_size_per_rank) if sharding_ctx is not None else []
        if not batches:
            batches = [local_embs.shape[0] // world] * world
        dtype = local_embs.dtype
        sizes = Sizes(batches, self.dims, self.exchange.rank, (self.comm_dtype or dtype).itemsize,
                       (self.grad_dtype or dtype).itemsize)
        if not (self.exchange.fits(sizes.forward) and self.exchange.fits(sizes.backward)):
            return self.fallback(local_embs, sharding_ctx)  # the same choice on every rank: sizes are global
        done = NoWait(_PooledAllToAll.apply(local_embs, self, sizes))
        done.callbacks.extend(self.fallback._callbacks or [])  # column-wise: the columns' permutation
        return done


class Sizes:
    """Rows (batches) and columns (dims) per rank, their offsets, and the bytes each rank
    sends each other rank forward (embeddings: B_dst x D_src) and backward (gradients:
    B_src x D_dst)."""

    def __init__(self, batches: list[int], dims: list[int], me: int, comm_size: int, grad_size: int):
        self.batches, self.dims, self.me = batches, dims, me
        self.rows = [sum(batches[:r]) for r in range(len(batches))]
        self.cols = [sum(dims[:r]) for r in range(len(dims))]
        n = range(len(batches))
        self.forward = [[0 if s == d else batches[d] * dims[s] * comm_size for d in n] for s in n]
        self.backward = [[0 if s == d else batches[s] * dims[d] * grad_size for d in n] for s in n]


class _PooledAllToAll(torch.autograd.Function):
    """(sum(B_r), D_me) -> (B_me, sum(D_r)) through the exchange; backward the reverse."""

    @staticmethod
    def forward(ctx, local_embs: torch.Tensor, owner: SharedMemoryPooledDist, s: Sizes) -> torch.Tensor:
        ctx.owner, ctx.sizes, ctx.in_dtype = owner, s, local_embs.dtype
        me, dims, b = s.me, s.dims, s.batches
        comm = owner.comm_dtype or local_embs.dtype
        out = torch.empty(b[me], sum(dims), dtype=owner.out_dtype or local_embs.dtype)

        def write(p, block):
            block.view(comm).view(b[p], dims[me]).copy_(local_embs[s.rows[p]:s.rows[p] + b[p]])

        def local():
            out[:, s.cols[me]:s.cols[me] + dims[me]].copy_(local_embs[s.rows[me]:s.rows[me] + b[me]])

        def read(p, block):
            out[:, s.cols[p]:s.cols[p] + dims[p]].copy_(block.view(comm).view(b[me], dims[p]))

        owner.exchange.exchange(s.forward, write, read, local)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        owner, s = ctx.owner, ctx.sizes
        me, dims, b = s.me, s.dims, s.batches
        comm = owner.grad_dtype or grad.dtype
        grad_in = torch.empty(sum(b), dims[me], dtype=ctx.in_dtype)
        # TorchRec's all-to-all backward divides the tables' gradients by the world size
        # (unless turned off): the dense gradients are averaged by DDP, these are summed.
        divisor = len(b) if get_gradient_division() else 1
        # Dividing by a power of two is exact in any float format, and so is multiplying by
        # its reciprocal (faster: 0.54 against 1.2 ms for 1.7M bf16 values here). Then, with
        # gradients already in the exchanged dtype, the sender scales on its way into shared
        # memory (a same-dtype pass, as fast as the copy) and the receiver only copies.
        # Otherwise the receiver divides: across dtypes ATen's arithmetic is slower than a
        # cast followed by an in-place pass over the contiguous rows.
        exact = divisor & (divisor - 1) == 0
        early = divisor > 1 and exact and grad.dtype == comm

        def move(source: torch.Tensor, target: torch.Tensor, scale: bool) -> None:
            if not scale or divisor == 1:
                target.copy_(source)
            elif source.dtype != target.dtype and exact:
                target.copy_(source).mul_(1 / divisor)
            elif source.dtype != target.dtype:
                target.copy_(source).div_(divisor)
            elif exact:
                torch.mul(source, 1 / divisor, out=target)
            else:
                torch.div(source, divisor, out=target)

        def write(p, block):
            move(grad[:, s.cols[p]:s.cols[p] + dims[p]], block.view(comm).view(b[me], dims[p]), early)

        def local():
            move(grad[:, s.cols[me]:s.cols[me] + dims[me]], grad_in[s.rows[me]:s.rows[me] + b[me]], True)

        def read(p, block):
            move(block.view(comm).view(b[p], dims[me]), grad_in[s.rows[p]:s.rows[p] + b[p]], not early)

        owner.exchange.exchange(s.backward, write, read, local)
        return grad_in, None, None


def codec_dtypes(d: TwPooledEmbeddingDist) -> tuple[torch.dtype | None, torch.dtype | None, torch.dtype | None] | None:
    """(comm, out, grad) dtypes of a dist's codecs (None: the tensors' own), or None for a
    codec this exchange does not reproduce."""
    codecs = d._codecs
    if codecs is None:
        return None, None, None
    fwd, bwd = codecs.forward, codecs.backward
    if not (isinstance(fwd, BF16CommCodec) and isinstance(bwd, BF16CommCodec)):
        return None
    return torch.bfloat16, torch.bfloat16 if isinstance(fwd, BF16KeptCommCodec) else None, torch.bfloat16
