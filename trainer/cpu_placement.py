"""Where a CPU training process runs: which cores, and how its allocator keeps memory.

Two settings that `torch` leaves to the launcher (issue 13, measured with
`bench/bench_train.py --ranks`, docs/benchmarks.md):

- Core affinity (`train.cpu_affinity: auto`). When several ranks share a node and their
  threads fit its cores, each local rank is bound to its own cores: the kernel otherwise
  moves a rank's compute thread and its gloo transport threads across the cores, and the
  ranks' caches with them. The same binding that Intel's `ipexrun` or `numactl
  --physcpubind` give a rank; done here because torchrun has none for CPU ranks.
- glibc's malloc thresholds (`train.malloc_tuning: true`). A training step frees and
  allocates the same large tensors every step (pooled embeddings, their gradients, the
  all-to-all buffers: megabytes each). glibc serves such blocks with mmap and returns them
  on free, or trims the heap top back to the kernel, so each step page-faults its buffers
  in again (zero-filled by the kernel). Raising the mmap threshold to its maximum and the
  trim threshold keeps them in the heap for reuse: the role jemalloc or tcmalloc play
  when preloaded, without an LD_PRELOAD set before the process starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

# mallopt(3) parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc caps M_MMAP_THRESHOLD at 32 MiB on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); larger
# blocks (embedding tables) keep their own mappings.
MMAP_THRESHOLD = 32 << 20
# Freed memory at the heap's top is returned beyond this much: the working set of a step
# stays, a one-off peak (checkpoint loading) still goes back.
TRIM_THRESHOLD = 1 << 30


def rank_cores(allowed: list[int], threads: int, local_rank: int, local_world_size: int) -> list[int] | None:
    """The cores local rank `local_rank` of `local_world_size` is bound to: the
    `local_rank`-th block of `threads` cores of `allowed` (sorted), or None (no binding)
    when there is one rank or the ranks' threads do not fit the allowed cores."""
    cores = sorted(allowed)
    if local_world_size <= 1 or threads < 1 or threads * local_world_size > len(cores):
        return None
    return cores[local_rank * threads:(local_rank + 1) * threads]


def bind_process(cores: list[int]) -> None:
    """Bind every thread of this process (those started so far, like gloo's, and through
    inheritance those started later) to `cores`."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except (ProcessLookupError, PermissionError):
            continue  # a thread that ended meanwhile
    os.sched_setaffinity(0, cores)


def tune_glibc_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds (see the module docstring); False where the
    C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok


def place_cpu_process(threads: int, affinity: str, malloc_tuning: bool, local_rank: int,
                      local_world_size: int) -> list[int] | None:
    """Apply `train.cpu_affinity` and `train.malloc_tuning` to this CPU process; returns
    the cores it was bound to (None: not bound)."""
    if malloc_tuning:
        tune_glibc_malloc()
    allowed = list(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    warning = oversubscribed(threads, local_world_size, len(allowed))
    if warning and local_rank == 0:
        log.warning(warning)
    if affinity != "auto" or not hasattr(os, "sched_setaffinity"):
        return None
    cores = rank_cores(allowed, threads, local_rank, local_world_size)
    if cores is not None:
        bind_process(cores)
    return cores


def oversubscribed(threads: int, local_world_size: int, cores: int) -> str:
    """A warning when the ranks on this node ask for more threads than it gives them cores,
    else "". Each rank's intra-op threads then wait for each other at every parallel region:
    measured 6x slower (`shardrec train --config bench_dlrm` as 2 torchrun ranks on 2 cores:
    9,460 samples/s with its train.num_threads 2, 56,921 with 0, that is 1 a rank)."""
    if local_world_size <= 1 or threads * local_world_size <= cores:
        return ""
    return (f"{local_world_size} ranks x {threads} threads (train.num_threads) on {cores} cores: the threads "
            "outnumber the cores and wait for each other, several times slower; leave train.num_threads at 0 "
            "(each rank gets cores / ranks)" + (", and run at most one rank a core" if local_world_size > cores
                                                   else ""))
