"""The sparse features of table-wise (and column-wise) tables sent to the ranks that own
them through shared memory: TorchRec's TwSparseFeaturesDist (a KJTAllToAll: one gloo
all-to-all for the sizes, one each for lengths, values and weights, then a permutation of
what arrives) over a HostExchange in two calls, what arrives written straight in the
feature-major order TorchRec's permutation produces (see host_exchange.py for why).
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.distributed.dist_data import KJTAllToAllTensorsAwaitable
from torchrec.distributed.sharding.tw_sharding import TwSparseFeaturesDist
from torchrec.distributed.types import Awaitable, NoWait
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

_ALIGN = 8  # bytes: every tensor's segment in a block starts at a multiple (int64 values)


def _padded(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


class SharedMemoryFeaturesDist(nn.Module):
    """TwSparseFeaturesDist (`original`, whose KJTAllToAll holds the features per rank)
    through `exchange`. forward(KJT with every rank's features, rank after rank, for this
    rank's B samples) -> Awaitable[Awaitable[KJT with this rank's features for every rank's
    samples: lengths (F_me * sum(B_r)), feature-major, each feature's samples rank after rank]].
    Variable batch per feature, and batches too large for the slots, take `original`."""

    def __init__(self, original: TwSparseFeaturesDist, exchange):
        super().__init__()
        self.fallback = original
        self.exchange = exchange
        self.splits = list(original._dist._splits)  # features per rank
        self.cum = [sum(self.splits[:r]) for r in range(len(self.splits) + 1)]

    def forward(self, features: KeyedJaggedTensor) -> Awaitable[Awaitable[KeyedJaggedTensor]]:
        ex, me, world = self.exchange, self.exchange.rank, self.exchange.world
        weights = features.weights_or_none()
        vbe = features.variable_stride_per_key()
        stride = features.stride()
        offsets = features.offset_per_key() if not vbe else [0] * (len(features.keys()) + 1)
        # Call 1, every rank to all: [stride, VBE?, weighted?, lengths' element size, values
        # sent to each rank...]; from it every rank knows every block's size.
        mine = [stride, int(vbe), int(weights is not None), features.lengths().element_size()]
        mine += [offsets[self.cum[p + 1]] - offsets[self.cum[p]] for p in range(world)]
        header = torch.tensor(mine, dtype=torch.int64)
        size = header.numel() * 8
        table = {me: header}

        def write_header(_, block):
            block.view(torch.int64).copy_(header)

        def read_header(p, block):
            table[p] = block.view(torch.int64).clone()

        ex.exchange([[0 if s == d else size for d in range(world)] for s in range(world)],
                    write_header, read_header, shared=True)
        info = torch.stack([table[r] for r in range(world)]).tolist()
        strides = [row[0] for row in info]
        values = [[row[4 + d] for d in range(world)] for row in info]  # values[src][dst]
        same = len({tuple(row[1:4]) for row in info}) == 1
        length_size, value_size = info[0][3], features.values().element_size()
        weight_size = weights.element_size() if weights is not None else 0

        def block_bytes(src: int, dst: int) -> int:
            n = values[src][dst]
            return (_padded(self.splits[dst] * strides[src] * length_size) + _padded(n * value_size)
                    + (_padded(n * weight_size) if info[0][2] else 0))

        nbytes = [[0 if s == d else block_bytes(s, d) for d in range(world)] for s in range(world)]
        if vbe or not same or not ex.fits(nbytes):  # the same answer on every rank: from the table
            return self.fallback(features)

        lengths, ids = features.lengths(), features.values()
        keys = features.keys()
        mine_keys = keys[self.cum[me]:self.cum[me + 1]]
        f_me = self.splits[me]
        total = sum(strides)
        rows = [sum(strides[:r]) for r in range(world)]
        out_lengths = torch.empty(f_me * total, dtype=lengths.dtype)
        out_values = torch.empty(sum(values[r][me] for r in range(world)), dtype=ids.dtype)
        out_weights = torch.empty(out_values.numel(), dtype=weights.dtype) if weights is not None else None
        # Where each (feature, source rank) segment of values goes: feature-major, ranks within.
        received: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}

        def parts(block, src: int, dst: int):
            n, f = values[src][dst], self.splits[dst]
            a = _padded(f * strides[src] * length_size)
            b = a + _padded(n * value_size)
            return (block[:f * strides[src] * length_size].view(lengths.dtype),
                    block[a:a + n * value_size].view(ids.dtype),
                    block[b:b + n * weight_size].view(weights.dtype) if weights is not None else None)

        def outgoing(p: int):
            """(lengths, values, weights) of rank p's features in this rank's batch."""
            lo, hi = offsets[self.cum[p]], offsets[self.cum[p + 1]]
            return (lengths[self.cum[p] * stride:self.cum[p + 1] * stride], ids[lo:hi],
                    weights[lo:hi] if weights is not None else None)

        def write(p, block):
            for target, source in zip(parts(block, me, p), outgoing(p)):
                if target is not None:
                    target.copy_(source)

        def read(p, block):
            received[p] = parts(block, p, me)

        ex.exchange(nbytes, write, read)
        received[me] = outgoing(me)
        # Lengths: (F_me, sum(B)) with source r's (F_me, B_r) in its columns. Values: each
        # feature's ids from every source in rank order (the segments' sizes from the lengths).
        grid = out_lengths.view(f_me, total)
        counts = []
        for r in range(world):
            ls = received[r][0].view(f_me, strides[r])
            grid[:, rows[r]:rows[r] + strides[r]].copy_(ls)
            counts.append(ls.sum(dim=1, dtype=torch.int64) if strides[r] else torch.zeros(f_me, dtype=torch.int64))
        counts_by_feature = torch.stack(counts, dim=1).tolist()  # [feature][source rank]
        at = 0
        starts = [0] * world
        for f in range(f_me):
            for r in range(world):
                n = counts_by_feature[f][r]
                if n:
                    out_values[at:at + n].copy_(received[r][1][starts[r]:starts[r] + n])
                    if out_weights is not None:
                        out_weights[at:at + n].copy_(received[r][2][starts[r]:starts[r] + n])
                starts[r] += n
                at += n
        kjt = KeyedJaggedTensor(keys=mine_keys, values=out_values, weights=out_weights, lengths=out_lengths,
                                stride=total).sync()
        return NoWait(_Received(kjt, strides, [values[me][d] for d in range(world)],
                                [values[r][me] for r in range(world)]))


class _Received(KJTAllToAllTensorsAwaitable):
    """The arrived features as TorchRec's own awaitable type: the sharded module reads the
    batch size of each rank (`_stride_per_rank`) from awaitables of this class only."""

    def __init__(self, kjt: KeyedJaggedTensor, strides: list[int], sent: list[int], received: list[int]):
        Awaitable.__init__(self)  # not KJTAllToAllTensorsAwaitable's: it would start the collectives
        self._kjt = kjt
        self._stride_per_rank = strides
        self._recat = None  # what arrives is already in order
        self._input_splits = {"values": sent}
        self._output_splits = {"values": received}

    def _wait_impl(self) -> KeyedJaggedTensor:
        return self._kjt
