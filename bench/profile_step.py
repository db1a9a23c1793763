"""Where one training step of shardrec's DLRM goes: torch.profiler, by operator and by module.

    .venv/bin/python bench/profile_step.py [--steps 8] [--threads 2] [--batch 2048] [--rows 100000]
                                           [--dim 64] [--precision fp32|bf16] [--pipeline base|sparse_dist]

The shape of issue 13 (the `bench_dlrm` flavor: 26 tables x rows x dim, bottom MLP
512-256-dim, top 512-256-1, batch 2,048) on pre-built synthetic batches, through
`build_sharded_task` and a TorchRec train pipeline, as `shardrec train` runs it. After a few
warm-up steps it profiles --steps steps and prints (1) the top operators by self CPU time with
their share of the total, and (2) CPU time by top-level module of the model (forward only: the
backward runs in autograd's engine and is attributed to operators).

With --by-thread it runs --steps steps unprofiled instead and prints the wall time a step and
the CPU time each thread of the process spent in it (Linux's /proc/self/task): under torchrun,
whether a rank's step waits or works, and how much of that work is gloo's own threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import bench_schema, make_batches, shardrec_config  # noqa: E402
from shardrec.launch.console import quiet_libraries  # noqa: E402
from shardrec.trainer.distributed import init_distributed, shutdown  # noqa: E402
from shardrec.trainer.loop import build_sharded_task, set_up_process  # noqa: E402
from torchrec.distributed.train_pipeline import TrainPipelineBase, TrainPipelineSparseDist  # noqa: E402

warnings.filterwarnings("ignore")


def label_modules(root: torch.nn.Module, depth: int = 2) -> None:
    """Wrap the forward of each module down to `depth` levels below the model in a
    record_function named by its path, so the profile can be read by module."""
    for name, module in root.named_modules():
        if not name or name.count(".") >= depth:
            continue
        forward = module.forward

        def labelled(*args, _f=forward, _n=name, **kwargs):
            with record_function(f"module::{_n}"):
                return _f(*args, **kwargs)

        module.forward = labelled


def thread_cpu_seconds() -> dict[tuple[str, str], float]:
    """{(thread id, name): user + system CPU seconds} of this process's threads."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:  # the thread ended
            continue
        name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        out[(tid, name)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out


def by_thread(step: Callable[[], object], steps: int, rank: int) -> None:
    """Wall and per-thread CPU milliseconds a step over `steps` unprofiled steps. The kernel
    counts CPU time in clock ticks (10 ms at the usual 100 Hz): time enough steps for that
    to vanish (40 steps of the bench shape: 0.25 ms a step)."""
    from shardrec.embeddings.host_exchange import waited_s

    waited = waited_s()
    before, start = thread_cpu_seconds(), time.perf_counter()
    for _ in range(steps):
        step()
    wall, after = time.perf_counter() - start, thread_cpu_seconds()
    used = {key: 1e3 * (cpu - before.get(key, 0.0)) / steps for key, cpu in after.items()}
    waited = waited_s() - waited
    lines = [f"rank {rank}: {1e3 * wall / steps:.1f} ms a step (wall), {sum(used.values()):.1f} ms of CPU"
             + (f", {1e3 * waited / steps:.1f} ms waiting for peers in shared memory" if waited else ""),
             "| thread | CPU ms/step |", "| --- | ---: |"]
    lines += [f"| {name} ({tid}) | {ms:.1f} |" for (tid, name), ms in sorted(used.items(), key=lambda kv: -kv[1])
              if ms >= 0.1]
    # One write, so that another rank's lines cannot land inside this table.
    sys.stdout.write("\n".join(lines) + "\n\n")
    sys.stdout.flush()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--pipeline", default="base", choices=["base", "sparse_dist"])
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--set", action="append", default=[], help="a config override, e.g. embeddings.comm_precision=bf16")
    p.add_argument("--shapes", default="", help="also list these operators' calls by input shapes (comma-separated)")
    p.add_argument("--by-thread", action="store_true", help="no profiler: wall and CPU time a step by thread")
    args = p.parse_args()
    quiet_libraries()
    schema = bench_schema(args.rows)
    cfg = shardrec_config(args.batch, args.dim, [f"--train.precision={args.precision}", f"--train.num_threads={args.threads}",
                                                 *(f"--{o}" for o in args.set)])
    env = init_distributed()
    # Each rank its own samples (as bench_train.py's rank workers): with the same ids on every
    # rank, a table's owner would update half the distinct rows a real step updates.
    batches = make_batches(args.warmup + args.steps, args.batch, args.rows, len(schema.sparse), seed=env.rank)
    try:
        set_up_process(cfg, env)  # as `shardrec train`: threads, cores, allocator
        model, optimizer = build_sharded_task(schema, cfg, env)
        label_modules(model.module.model if hasattr(model, "module") else model, depth=1)
        cls = TrainPipelineSparseDist if args.pipeline == "sparse_dist" else TrainPipelineBase
        pipeline = cls(model, optimizer, env.device)
        it = iter(batches)
        for _ in range(args.warmup):
            pipeline.progress(it)
        if args.by_thread:
            return by_thread(lambda: pipeline.progress(it), args.steps, env.rank)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=bool(args.shapes)) as prof:
            for _ in range(args.steps):
                pipeline.progress(it)
    finally:
        shutdown(env)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.steps} steps, {total / args.steps / 1e3:.1f} ms of self CPU time per step "
          f"({args.threads} threads, precision {args.precision}, pipeline {args.pipeline})")
    print("\n| operator | ms/step | share |\n| --- | ---: | ---: |")
    ops = sorted((e for e in events if not e.key.startswith("module::")), key=lambda e: -e.self_cpu_time_total)
    for e in ops[:args.top]:
        print(f"| `{e.key}` | {e.self_cpu_time_total / args.steps / 1e3:.1f} | "
              f"{100 * e.self_cpu_time_total / total:.1f}% |")
    if args.shapes:
        wanted = set(args.shapes.split(","))
        print("\n| operator | input shapes | calls/step | ms/step |\n| --- | --- | ---: | ---: |")
        by_shape = [e for e in prof.key_averages(group_by_input_shape=True) if e.key in wanted]
        for e in sorted(by_shape, key=lambda e: -e.self_cpu_time_total)[:args.top]:
            print(f"| `{e.key}` | {e.input_shapes} | {e.count / args.steps:.0f} | "
                  f"{e.self_cpu_time_total / args.steps / 1e3:.1f} |")
    print("\n| module (forward, inclusive) | ms/step |\n| --- | ---: |")
    for e in sorted((e for e in events if e.key.startswith("module::")), key=lambda e: -e.cpu_time_total):
        print(f"| {e.key[8:]} | {e.cpu_time_total / args.steps / 1e3:.1f} |")


if __name__ == "__main__":
    main()
