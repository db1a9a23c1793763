"""Sparse features, pooled embeddings and dense gradients exchanged through shared memory
between the CPU ranks of one host.

Table-wise (and column-wise) sharded tables send each rank's pooled embeddings to the ranks
that own the samples: TorchRec's PooledEmbeddingsAllToAll, a gloo all-to-all on CPU. With
every rank on one host, gloo still moves the bytes through loopback TCP on its own threads,
and TorchRec adds passes of its own around the collective (the codec's casts, a copy into a
send buffer, the concatenation of what arrives): on the benchmark DLRM (2 ranks x 1 thread,
docs/benchmarks.md) about nine passes over the 3.4M exchanged values a step, forward and
backward, on the same single core each rank computes with. Nothing in TorchRec or gloo
exchanges them through shared memory, so it is done here, in the fewest passes: each rank
casts the rows it owes a peer straight into its own shared-memory file, copies its own part
straight into the output, and casts what its peers wrote straight into the output's columns
(one pass over each value on each side, forward and backward alike).

HostExchange here is the transport: one /dev/shm file per rank (a header page and two
slots), made, checked and unlinked collectively when the model is sharded, so nothing is left
behind even when a process is killed. A lost peer is noticed within a fraction of a second
(its lock on its file is released when its process dies; a peer that stops cleanly marks its
header closed) and raises, as gloo does, for the launcher's restart to take over. Over it,
with the same inputs and outputs as the TorchRec modules they stand in for:
- shm_features_dist.py: the sparse features' all-to-all (TwSparseFeaturesDist);
- shm_pooled_dist.py: the pooled embeddings' all-to-all (TwPooledEmbeddingDist);
- shm_allreduce.py: DDP's all-reduce of the dense gradients (a communication hook).
use_shared_memory_exchange swaps them into a sharded model (TorchRec's sharders offer no hook
to choose a sharded module's dists); each falls back to TorchRec's collective for what it does
not cover (variable batch per feature, a batch larger than the slots).
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import mmap
import os
import platform
import time
import uuid

import numpy as np
import torch
import torch.distributed as dist
from shardrec.embeddings.shm_allreduce import allreduce_hook
from shardrec.embeddings.shm_features_dist import SharedMemoryFeaturesDist
from shardrec.embeddings.shm_pooled_dist import SharedMemoryPooledDist, Sizes, codec_dtypes
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchrec.distributed.embeddingbag import ShardedEmbeddingBagCollection
from torchrec.distributed.sharding.tw_sharding import TwPooledEmbeddingDist, TwSparseFeaturesDist

log = logging.getLogger(__name__)

# DDP's bucket size in TorchRec's DefaultDataParallelWrapper (bucket_cap_mb=25): the largest
# all-reduce of dense gradients the slots are sized for (larger ones take the process group).
DDP_BUCKET_BYTES = 25 << 20
HEADER = 4096  # bytes: int64 [0] calls published, [1] closed, [2] nonce (the file is the one made for this group)
_CALLS, _CLOSED, _NONCE = 0, 1, 2
_OPEN: list[HostExchange] = []


class PeerLost(RuntimeError):
    """A peer rank stopped (exited, closed its exchange or timed out) during an exchange."""


class HostExchange:
    """All-to-all of byte blocks among the ranks of `pg`, all on this host, through one
    shared-memory file per rank: a header page, then two slots of `capacity` bytes.

    A call is collective (every rank makes the same calls in the same order, as with any
    collective): rank r writes the block for each peer p into slot (call % 2) of its own
    file, then publishes the call's number in its header; each rank then waits for every
    peer's number and reads its block from the peer's file. A rank can only reach call
    n + 2, which reuses slot n % 2, after every peer published n + 1, that is after every
    peer finished reading call n: two slots need no further handshake. x86's total store
    order keeps the block's stores visible before the number's (other CPUs: not offered).
    """

    def __init__(self, pg: dist.ProcessGroup, capacity: int, timeout_s: float, maps: list[mmap.mmap],
                 fds: list[int], paths: list[str]):
        self.pg = pg  # the group it stands in for: what a fallback goes through
        self.rank, self.world, self.capacity, self.timeout_s = pg.rank(), pg.size(), capacity, timeout_s
        self.paths = paths  # the files' names while they were made (all unlinked by now)
        self._maps, self._fds = maps, fds
        self._headers = [np.frombuffer(m, dtype=np.int64, count=HEADER // 8) for m in maps]
        self._data = [torch.frombuffer(m, dtype=torch.uint8) for m in maps]
        self.calls = 0
        self.closed = False
        self.waited_s = 0.0  # time spent waiting for peers, for profiling (bench/profile_step.py --by-thread)

    @classmethod
    def open(cls, pg: dist.ProcessGroup, capacity: int, timeout_s: float) -> tuple[HostExchange | None, str]:
        """Collective over `pg`: (the exchange, "") when every rank is on this host and can
        map every rank's file, else (None, why not) on every rank."""
        rank, world = pg.rank(), pg.size()
        capacity = -(-capacity // 4096) * 4096
        size = HEADER + 2 * capacity
        token = [uuid.uuid4().hex if rank == 0 else None]
        dist.broadcast_object_list(token, src=dist.get_global_rank(pg, 0), group=pg)
        paths = [f"/dev/shm/shardrec-{token[0]}-{r}" for r in range(world)]
        nonce = int(token[0][:15], 16)
        fd, why = -1, ""
        if platform.machine() not in ("x86_64", "AMD64"):
            why = f"{platform.machine()} is not x86-64 (the exchange relies on its store order)"
        elif not os.path.isdir("/dev/shm"):
            why = "no /dev/shm"
        else:
            try:
                fd = os.open(paths[rank], os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)  # held for life: peers see it released when this process dies
                # Reserved now: a tmpfs that runs out of pages later would kill the process
                # with SIGBUS on a write instead of raising here.
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                why = f"{paths[rank]}: {e.strerror or e} ({size * world / 2**20:.0f} MiB of /dev/shm needed)"
        maps = [None] * world
        fds = [-1] * world
        try:
            if not why:
                maps[rank], fds[rank] = mmap.mmap(fd, size), fd
                np.frombuffer(maps[rank], dtype=np.int64, count=3)[_NONCE] = nonce + rank
            why = _first_reason(pg, why)
            if not why:
                for r in range(world):
                    if r == rank:
                        continue
                    try:
                        fds[r] = os.open(paths[r], os.O_RDWR)
                        maps[r] = mmap.mmap(fds[r], size)
                    except OSError as e:
                        why = f"rank {r}'s {paths[r]} is not visible here ({e.strerror}): not on one host"
                        break
                    if np.frombuffer(maps[r], dtype=np.int64, count=3)[_NONCE] != nonce + r:
                        why = f"rank {r}'s {paths[r]} holds another group's header"
                        break
                why = _first_reason(pg, why)  # also: every rank has mapped every file
        finally:
            if fd >= 0:
                os.unlink(paths[rank])  # mapped everywhere (or given up): the name is not needed any more
        if why:
            if fd >= 0 and fds[rank] < 0:  # made, but never mapped
                os.close(fd)
            for m, f in zip(maps, fds):
                if m is not None:
                    m.close()
                if f >= 0:
                    os.close(f)
            return None, why
        exchange = cls(pg, capacity, timeout_s, maps, fds, paths)
        _OPEN.append(exchange)
        return exchange, ""

    def fits(self, nbytes: list[list[int]], shared: bool = False) -> bool:
        """Whether a call sending nbytes[src][dst] bytes fits the slots (the same answer on
        every rank, as nbytes is)."""
        return max(max(row) if shared else sum(row) for row in nbytes) <= self.capacity

    def exchange(self, nbytes: list[list[int]], write, read, local=None, shared: bool = False) -> None:
        """One collective call: `write(p, block)` fills the uint8 block (nbytes[rank][p]) sent
        to each peer p, `local()` runs while peers write, `read(p, block)` consumes the block
        (nbytes[p][rank]) each peer p sent; the block stays valid until this rank's next call.
        `shared`: every rank sends the same block to all (nbytes[src][dst] equal for all
        dst), written once (`write(None, block)`). Needs fits(nbytes)."""
        me, world = self.rank, self.world
        if self.closed:
            raise RuntimeError("the shared-memory exchange was closed")
        self.calls += 1
        base = HEADER + (self.calls % 2) * self.capacity
        if shared:
            write(None, self._data[me][base:base + nbytes[me][(me + 1) % world]])
        else:
            for p in range(world):
                if p != me:
                    start = base + sum(nbytes[me][:p])
                    write(p, self._data[me][start:start + nbytes[me][p]])
        self._headers[me][_CALLS] = self.calls
        if local is not None:
            local()
        for step in range(1, world):
            p = (me + step) % world  # each rank starts with the next one: fewer ranks read one file at once
            self._wait(p)
            start = base + (0 if shared else sum(nbytes[p][:me]))
            read(p, self._data[p][start:start + nbytes[p][me]])

    def _wait(self, peer: int) -> None:
        header = self._headers[peer]
        if header[_CALLS] >= self.calls:
            return
        # Spin first (a rank has a core of its own, and the peer is usually microseconds
        # away), then yield the core, then sleep: ranks sharing cores must not starve each other.
        began = time.monotonic()
        check_at = began + 0.2
        spins = 0
        while header[_CALLS] < self.calls:
            spins += 1
            if spins < 2_000:
                continue
            if spins < 20_000:
                os.sched_yield()
            else:
                time.sleep(0.0002)
            now = time.monotonic()
            if now >= check_at:
                self._check(peer, now - began)
                check_at = now + 0.2
        self.waited_s += time.monotonic() - began

    def _check(self, peer: int, waited: float) -> None:
        what = f"rank {self.rank} waited for rank {peer} in the shared-memory exchange (call {self.calls})"
        if self._headers[peer][_CALLS] >= self.calls:
            return
        if self._headers[peer][_CLOSED]:
            raise PeerLost(f"{what}, but rank {peer} stopped")
        try:
            fcntl.flock(self._fds[peer], fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # still held: the peer's process is alive
        else:
            fcntl.flock(self._fds[peer], fcntl.LOCK_UN)
            raise PeerLost(f"{what}, but rank {peer}'s process exited")
        if waited > self.timeout_s:
            raise PeerLost(f"{what} for {waited:.0f} s, past the process group's timeout")

    def close(self) -> None:
        """Tell the peers this rank takes no more calls and release the files (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._headers[self.rank][_CLOSED] = 1
        self._headers, self._data = [], []
        for m, f in zip(self._maps, self._fds):
            try:
                m.close()
            except BufferError:  # a tensor still views it: the mapping goes with the process
                pass
            os.close(f)
        if self in _OPEN:
            _OPEN.remove(self)


def waited_s() -> float:
    """Seconds this process's open exchanges have waited for their peers (for profiling)."""
    return sum(e.waited_s for e in _OPEN)


def close_all() -> None:
    """Close every exchange this process opened (its peers stop waiting for it at once)."""
    for exchange in list(_OPEN):
        exchange.close()


atexit.register(close_all)


def _first_reason(pg: dist.ProcessGroup, why: str) -> str:
    """Collective: the first non-empty reason any rank gives, "" if none."""
    reasons: list = [None] * pg.size()
    dist.all_gather_object(reasons, why, group=pg)
    return next((f"rank {r}: {w}" for r, w in enumerate(reasons) if w), "")


def use_shared_memory_exchange(model: nn.Module, batch_size: int, timeout_s: float, required: bool = False) -> str:
    """Collective: when every rank of the default group is on this host, send the sparse
    features and pooled embeddings of `model` (a DMP-sharded model on CPU; the all-to-alls of
    its table-wise and column-wise tables) and its dense gradients (DDP's all-reduce) through
    a HostExchange, its slots sized for `batch_size` samples a rank and the dense gradients.
    Returns "" when done (or there was nothing to exchange), else why not (raised instead
    when `required`)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return ""
    pg = dist.distributed_c10d._get_default_group()
    world = pg.size()
    targets = []
    for module in model.modules():
        if isinstance(module, ShardedEmbeddingBagCollection):
            for i, d in enumerate(module._output_dists):
                if type(d) is TwPooledEmbeddingDist and d._pg is pg and codec_dtypes(d) is not None:
                    targets.append((module, i, d))
    ddp = getattr(model, "_dmp_wrapped_module", None)
    ddp = ddp if isinstance(ddp, DistributedDataParallel) and ddp.process_group is pg else None
    if not targets and ddp is None:
        return ""
    capacity = 0
    for _, _, d in targets:
        # What a call sends at `batch_size` samples a rank, in fp32 (the widest either way).
        sizes = Sizes([batch_size] * world, d._dim_sum_per_rank, pg.rank(), 4, 4)
        capacity = max(capacity, *(sum(row) for row in sizes.forward + sizes.backward))
    if ddp is not None:
        # What DDP all-reduces: not the sharded tables' parameters, which differ by rank.
        dense = sum(p.numel() * p.element_size() for name, p in ddp.module.named_parameters()
                    if p.requires_grad and name not in ddp.parameters_to_ignore)
        capacity = max(capacity, min(dense, DDP_BUCKET_BYTES))
    exchange, why = HostExchange.open(pg, capacity, timeout_s)
    if exchange is None:
        if required:
            from shardrec.configs.errors import UserError

            raise UserError(f"config key 'train.cpu_exchange': shared_memory is not possible here: {why}")
        log.info("ranks exchange through the process group: %s", why)
        return why
    for module, i, d in targets:
        module._output_dists[i] = SharedMemoryPooledDist(d, exchange, *codec_dtypes(d))
    for module in {id(m): m for m, _, _ in targets}.values():
        _swap_input_dists_when_made(module, exchange, pg)
    if ddp is not None:
        ddp.register_comm_hook(exchange, allreduce_hook)
    return ""


def _swap_input_dists_when_made(module: ShardedEmbeddingBagCollection, exchange: HostExchange,
                                pg: dist.ProcessGroup) -> None:
    """Send `module`'s table-wise sparse features through `exchange` (SharedMemoryFeaturesDist).
    TorchRec makes a sharded module's input dists at its first batch (they depend on the
    order of the batch's features), so the swap follows the making."""
    def swap() -> None:
        for i, d in enumerate(module._input_dists):
            if type(d) is TwSparseFeaturesDist and d._dist._pg is pg:
                module._input_dists[i] = SharedMemoryFeaturesDist(d, exchange)

    if not module._has_uninitialized_input_dist:
        return swap()
    make = module._create_input_dist

    def make_then_swap(input_feature_names: list[str]) -> None:
        make(input_feature_names)
        swap()

    module._create_input_dist = make_then_swap
