"""Rank processes for tests/embeddings/test_host_exchange.py (spawned, gloo over a file store)."""

from __future__ import annotations

import gc
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.distributed as dist
from shardrec.configs.errors import UserError
from shardrec.embeddings.host_exchange import (
    HostExchange,
    PeerLost,
    close_all,
    use_shared_memory_exchange,
)
from shardrec.embeddings.shm_allreduce import allreduce_hook
from shardrec.embeddings.shm_features_dist import SharedMemoryFeaturesDist
from shardrec.embeddings.shm_pooled_dist import SharedMemoryPooledDist
from torchrec.distributed.embedding_sharding import EmbeddingShardingContext
from torchrec.distributed.sharding.tw_sharding import TwPooledEmbeddingDist, TwSparseFeaturesDist
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

DIMS = [3, 1, 5]  # columns of each rank's tables


def _init(rank: int, world: int, init_file: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    return dist.group.WORLD


def _dist(pg, world: int) -> TwPooledEmbeddingDist:
    dims = DIMS[:world]
    return TwPooledEmbeddingDist(pg, dims, [[d] for d in dims], torch.device("cpu"))


def compare(rank: int, world: int, init_file: str, out: str) -> None:
    """The pooled all-to-all of TorchRec's TwPooledEmbeddingDist and of SharedMemoryPooledDist on
    the same embeddings and output gradients, for several batch splits (uneven ones, and one
    too large for the slots, which falls back to TorchRec's): the largest differences."""
    pg = _init(rank, world, init_file)
    capacity = 8 * 4 * sum(DIMS)  # 8 samples a rank in fp32, rounded up to a page: not 1,000
    exchange, why = HostExchange.open(pg, capacity, timeout_s=60)
    assert exchange is not None, why
    reference, ours = _dist(pg, world), SharedMemoryPooledDist(_dist(pg, world), exchange, None, None, None)
    results = {"cases": []}
    for batches in ([4, 4, 4], [4, 2, 3], [5, 0, 1], [1000, 1000, 1000]):
        batches = batches[:world]
        ctx = EmbeddingShardingContext(batch_size_per_rank=batches)
        gen = torch.Generator().manual_seed(100 * rank + sum(batches))
        local = torch.randn(sum(batches), DIMS[rank], generator=gen)
        grad = torch.randn(batches[rank], sum(DIMS[:world]), generator=gen)
        calls = exchange.calls
        got = []
        for d in (reference, ours):
            x = local.clone().requires_grad_()
            y = d(x, ctx).wait()
            y.backward(grad)
            got.append((y.detach(), x.grad))
        results["cases"].append({"batches": batches, "shape": list(got[1][0].shape),
                                 "out_equal": torch.equal(got[0][0], got[1][0]),
                                 "grad_equal": torch.equal(got[0][1], got[1][1]),
                                 "grad_norm": float(got[1][1].norm()),
                                 "calls": exchange.calls - calls})
    results["files_left"] = [p for p in exchange.paths if os.path.exists(p)]  # after collectives: all unlinked
    close_all()
    Path(f"{out}.{rank}").write_text(json.dumps(results))
    dist.destroy_process_group()


def lost_peer(rank: int, world: int, init_file: str, out: str, how: str) -> None:
    """Both ranks make one call; then rank 1 stops (`how`: "exit" = its process ends without a
    word, "close" = it closes the exchange and stays alive) and rank 0 makes a second call:
    what rank 0 raised and how long it waited."""
    pg = _init(rank, world, init_file)
    exchange, why = HostExchange.open(pg, 4096, timeout_s=60)
    assert exchange is not None, why
    sizes = [[0, 64], [64, 0]]

    def write(p, block):
        block.fill_(rank + 1)

    seen = []
    exchange.exchange(sizes, write, lambda p, block: seen.append(int(block[0])))
    dist.barrier()
    if rank == 1:
        if how == "exit":
            os._exit(3)
        close_all()
        time.sleep(4)  # alive, lock released only by close: rank 0 must not wait for this
        os._exit(0)
    began = time.monotonic()
    try:
        exchange.exchange(sizes, write, lambda p, block: None)
        error = None
    except PeerLost as e:
        error = str(e)
    Path(f"{out}.0").write_text(json.dumps(
        {"seen": seen, "error": error, "waited_s": time.monotonic() - began}))
    os._exit(0)  # the group's peer is gone: no orderly shutdown of gloo


def refused(rank: int, world: int, init_file: str, out: str) -> None:
    """Rank 1 cannot take part (as on a CPU other than x86-64): every rank gets None and the
    same reason."""
    pg = _init(rank, world, init_file)
    if rank == 1:
        platform.machine = lambda: "aarch64"
    exchange, why = HostExchange.open(pg, 4096, timeout_s=60)
    # What train.cpu_exchange makes of it: auto goes on through the process group (the reason
    # returned), shared_memory stops with the reason.
    model = torch.nn.Module()
    model._dmp_wrapped_module = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
    auto = use_shared_memory_exchange(model, 8, timeout_s=60)
    try:
        use_shared_memory_exchange(model, 8, timeout_s=60, required=True)
        required = ""
    except UserError as e:
        required = str(e)
    Path(f"{out}.{rank}").write_text(json.dumps({"exchange": exchange is not None, "why": why, "auto": auto,
                                                 "required": required}))
    del model  # DDP holds the group: gone before the group is (trainer.distributed.shutdown says why)
    gc.collect()
    dist.destroy_process_group()


def dense_gradients(rank: int, world: int, init_file: str, out: str) -> None:
    """The same small MLP under DDP with gloo's all-reduce and with allreduce_hook, each rank
    on its own inputs (buckets of a few KiB, one too large for the slots): the largest
    difference between the two averaged gradients, and whether every rank got the same bits."""
    pg = _init(rank, world, init_file)
    exchange, why = HostExchange.open(pg, 16 << 10, timeout_s=60)
    assert exchange is not None, why
    grads = []
    for hooked in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                    torch.nn.ReLU(), torch.nn.Linear(64, 1))
        ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.01)  # several buckets
        if hooked:
            ddp.register_comm_hook(exchange, allreduce_hook)
        for step in range(3):
            ddp.zero_grad()
            x = torch.randn(32, 16, generator=torch.Generator().manual_seed(10 * rank + step))
            ddp(x).square().mean().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    everyone = [torch.empty_like(grads[1]) for _ in range(world)]
    dist.all_gather(everyone, grads[1])
    Path(f"{out}.{rank}").write_text(json.dumps({
        "max_diff": float((grads[0] - grads[1]).abs().max()), "scale": float(grads[0].abs().max()),
        "same_on_all_ranks": all(torch.equal(everyone[0], g) for g in everyone), "calls": exchange.calls}))
    del ddp, model  # DDP holds the group: gone before the group is
    gc.collect()
    close_all()
    dist.destroy_process_group()


def features(rank: int, world: int, init_file: str, out: str) -> None:
    """TorchRec's TwSparseFeaturesDist and SharedMemoryFeaturesDist on the same KJTs (keys
    f0..f4 owned 2/1/2 by the ranks; uneven batches, empty bags, weights or not): whether
    the received KJTs and the batch sizes TorchRec's sharded module reads are the same."""
    pg = _init(rank, world, init_file)
    exchange, why = HostExchange.open(pg, 1 << 16, timeout_s=60)
    assert exchange is not None, why
    splits = [2, 1, 2][:world]
    keys = [f"f{i}" for i in range(sum(splits))]
    reference = TwSparseFeaturesDist(pg, splits)
    ours = SharedMemoryFeaturesDist(TwSparseFeaturesDist(pg, splits), exchange)
    cases = []
    for batches, weighted in (([3, 3, 3], False), ([4, 1, 2], True), ([2, 0, 5], False), ([3000, 3000, 3000], False)):
        gen = torch.Generator().manual_seed(10 * rank + batches[0])
        stride = batches[rank]
        lengths = torch.randint(0, 4, (len(keys) * stride,), generator=gen, dtype=torch.int32)
        values = torch.randint(0, 1000, (int(lengths.sum()),), generator=gen)
        weights = torch.rand(values.numel(), generator=gen) if weighted else None
        kjt = KeyedJaggedTensor(keys=keys, values=values, lengths=lengths, weights=weights, stride=stride)
        calls = exchange.calls
        got = []
        for d in (reference, ours):
            inner = d(kjt).wait()
            received = inner.wait()
            got.append((received, inner._stride_per_rank))
        (a, sa), (b, sb) = got
        cases.append({"batches": batches[:world], "calls": exchange.calls - calls, "strides": [sa, sb],
                      "keys": a.keys() == b.keys(), "stride": a.stride() == b.stride(),
                      "lengths": torch.equal(a.lengths(), b.lengths()),
                      "values": torch.equal(a.values(), b.values()),
                      "weights": (a.weights_or_none() is None and b.weights_or_none() is None)
                      or torch.equal(a.weights(), b.weights())})
    Path(f"{out}.{rank}").write_text(json.dumps({"cases": cases}))
    close_all()
    dist.destroy_process_group()
