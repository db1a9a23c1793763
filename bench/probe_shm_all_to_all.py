"""Probe: how much of the 2-rank CPU step is gloo's loopback TCP? The same step with every
`all_to_all_single` of the ranks carried through shared memory instead.

    OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc-per-node=2 bench/probe_shm_all_to_all.py \
        [--shm] [--steps 60] [--comm-precision bf16] [--precision bf16] [--profile]

The bench shape (configs/bench_dlrm.yaml's DLRM, batch 2,048 a rank, 1 thread a rank, as
`bench_train.py --ranks` runs it). With --shm, `torch.distributed.all_to_all_single` (which
TorchRec's input distribution and pooled-embedding all-to-alls call) is replaced in this
process by ShmAllToAll below (every call, whatever its group: with 2 ranks TorchRec uses only
the world's); the dense gradients' all-reduce stays on gloo. Each rank prints
its wall and per-thread CPU time a step (profile_step.by_thread) and, with --shm, the time it
spun waiting for its peer; with --profile, rank 0's operators by self CPU time instead.

A measurement, not a transport to train with: it has no timeout on a lost peer beyond a
fixed minute, two buffers of 64 MiB, ranks on one host only, and it keeps TorchRec's own copies
(the send-buffer copy, the concatenations, the codec's casts) that a real shared-memory
exchange would fuse into its reads and writes. Results: docs/benchmarks.md, "The ATen
row-wise AdaGrad update", at its end. The exchange shardrec trains with, built from what this
probe measured: embeddings/host_exchange.py (`train.cpu_exchange`); the probe runs TorchRec's
collectives (`train.cpu_exchange=process_group`), whose transport it replaces.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import bench_schema, make_batches, shardrec_step, variant_overrides  # noqa: E402
from profile_step import by_thread  # noqa: E402
from shardrec.launch.console import quiet_libraries  # noqa: E402
from shardrec.trainer.distributed import init_distributed, shutdown  # noqa: E402

SLOT = 64 << 20  # bytes one rank may send in one call
HEADER = 4096  # int64s: [0] the call number, [1:8] unused, [8 + 16 * slot + r] bytes sent to rank r


class ShmAllToAll:
    """all_to_all_single for the ranks of one host: rank r writes its whole input into slot
    (call number % 2) of its own /dev/shm file, publishes the byte sizes meant for each rank
    and then the call number; each rank spins until every peer has published that number and
    copies its part out. A rank can only start call n + 2 (and overwrite slot n % 2) after
    every peer published n + 1, that is, after every peer finished reading call n."""

    def __init__(self, rank: int, world: int):
        key = f"shardrec-probe-{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}"
        self.rank, self.world = rank, world
        self.paths = [f"/dev/shm/{key}-{r}" for r in range(world)]
        with open(self.paths[rank], "wb") as f:
            f.truncate(HEADER + 2 * SLOT)
        dist.barrier()  # every file exists before anyone maps it
        self.files = [torch.from_file(p, shared=True, size=HEADER + 2 * SLOT, dtype=torch.uint8) for p in self.paths]
        self.headers = [f[:HEADER].view(torch.int64) for f in self.files]
        self.calls = 0
        self.spin_s = 0.0

    def __call__(self, output: torch.Tensor, input: torch.Tensor, output_split_sizes=None, input_split_sizes=None,
                 group=None, async_op: bool = False):
        w, me = self.world, self.rank
        sent = list(input_split_sizes) if input_split_sizes else [input.numel() // w] * w
        received = list(output_split_sizes) if output_split_sizes else [output.numel() // w] * w
        size = input.element_size()
        self.calls += 1
        slot = self.calls % 2
        data = input.contiguous().reshape(-1).view(torch.uint8)
        if data.numel() > SLOT:
            raise RuntimeError(f"probe buffer too small: {data.numel()} bytes to send, {SLOT} per slot")
        start = HEADER + slot * SLOT
        self.files[me][start:start + data.numel()].copy_(data)
        self.headers[me][8 + 16 * slot:8 + 16 * slot + w] = torch.tensor([n * size for n in sent])
        self.headers[me][0] = self.calls  # published after the data (x86 keeps stores in order)
        out = output.reshape(-1).view(torch.uint8)
        pos = 0
        for peer in range(w):
            length = received[peer] * size
            if peer == me:
                offset = sum(sent[:me]) * size
                out[pos:pos + length].copy_(data[offset:offset + length])
            else:
                waited = time.perf_counter()
                while int(self.headers[peer][0]) < self.calls:
                    if time.perf_counter() - waited > 60:
                        raise RuntimeError(f"rank {peer} did not publish call {self.calls} within 60 s")
                self.spin_s += time.perf_counter() - waited
                sizes = self.headers[peer][8 + 16 * slot:8 + 16 * slot + w].tolist()
                offset = HEADER + slot * SLOT + sum(sizes[:me])
                out[pos:pos + length].copy_(self.files[peer][offset:offset + length])
            pos += length
        return _Done() if async_op else None

    def close(self) -> None:
        dist.barrier()  # nobody reads any more
        os.unlink(self.paths[self.rank])


class _Done:
    """The finished Work an async call returns: the copies are done when the call returns."""

    def wait(self, *args, **kwargs) -> bool:
        return True

    def is_completed(self) -> bool:
        return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shm", action="store_true", help="all_to_all_single through shared memory")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--precision", default="bf16", help="train.precision")
    p.add_argument("--comm-precision", default="bf16", help="embeddings.comm_precision")
    p.add_argument("--profile", action="store_true", help="torch.profiler's operator table (rank 0) instead")
    args = p.parse_args()
    quiet_libraries()
    env = init_distributed()
    exchange = None
    try:
        if args.shm:
            exchange = ShmAllToAll(env.rank, env.world_size)
            dist.all_to_all_single = exchange  # TorchRec calls it as dist.all_to_all_single
        batches = make_batches(8, 2048, 100_000, seed=env.rank)
        step = shardrec_step(bench_schema(100_000), batches, 2048, env,
                             ["--train.num_threads=1", f"--embeddings.comm_precision={args.comm_precision}",
                              "--train.cpu_exchange=process_group",
                              *variant_overrides(args.precision, "fp32")], set_up=True)
        for _ in range(args.warmup):
            step()
        if args.profile:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                for _ in range(args.steps):
                    step()
            if env.rank == 0:
                print(f"{args.steps} steps, rank 0, self CPU time:")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
            return
        spun = exchange.spin_s if exchange else 0.0
        by_thread(step, args.steps, env.rank)
        if exchange:
            sys.stdout.write(f"rank {env.rank}: {1e3 * (exchange.spin_s - spun) / args.steps:.1f} ms a step spent "
                             f"waiting for the peer in shared memory\n")
            sys.stdout.flush()
    finally:
        if exchange:
            exchange.close()
        shutdown(env)


if __name__ == "__main__":
    main()
