"""GPU training throughput of the MLPerf DLRM-DCNv2 flavor, against its memory-bandwidth ceiling.

    python bench/bench_gpu_dlrm_dcn.py [--cap 10000000] [--batch 8192] [--steps 50]
                                       [--dtypes fp32,fp16] [--precisions fp32,bf16]
                                       [--profile] [--device cuda]

The model is shardrec's `dlrm_dcn` / `mlperf` flavor (TorchRec's DLRM_DCN: 26 tables x 128,
bottom MLP 512-256-128, 3 low-rank cross layers, top MLP 1024-1024-512-256-1) over the MLPerf
Criteo 1TB table sizes, each capped at --cap rows so that the tables fit one GPU, with the
reference's multi-hot bag sizes (214 ids per sample). It is built and sharded as `shardrec
train` does (`build_sharded_task`: planner, DMP, FBGEMM fused row-wise Adagrad) and driven by
TrainPipelineSparseDist over pre-built random batches on the device, once per table dtype
(`embeddings.weights_dtype`) and dense precision (`train.precision`: fp32, or bf16 autocast as
MLPerf's submissions run the dense layers in reduced precision). `--profile` adds, for the
last combination, the operators and ranges with the most device time over 10 steps
(torch.profiler).

The ceiling: the bytes one sample moves through the tables' memory at the least (per table
with bag size h, dim E and w bytes per weight: forward reads h rows, h*E*w; the fused
backward reads the pooled gradient, E*4, and for each of the h rows reads and writes the row,
2*h*E*w, and its Adagrad state, 2*h*4; the pooled output is written, E*4), over the device's
measured copy bandwidth (bytes read + written per second by a 1 GiB device-to-device copy).
Samples/s above it are impossible; the gap to it is what the dense part and the kernels'
efficiency cost. MLPerf Training's per-GPU rates for this model, for comparison: HugeCTR on
8 x H200 about 1.8-1.9M samples/s per GPU, on 8 x H100 about 1.7M.

Runs on a CPU as well (`--device cpu --cap 1000 --batch 256 --steps 2`), which the test
suite does to keep the script working on machines without a GPU.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import time
import warnings

import torch
from shardrec.configs.loader import load_config
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature
from shardrec.launch.console import quiet_libraries
from shardrec.trainer.distributed import init_distributed, shutdown
from shardrec.trainer.loop import build_sharded_task
from shardrec.trainer.models.dlrm_dcn import FLAVORS, MLPERF_MULTI_HOT_SIZES, MLPERF_TABLE_SIZES
from torchrec.datasets.utils import Batch
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

warnings.filterwarnings("ignore")
BYTES = {"fp32": 4, "fp16": 2}


def capped_schema(cap: int) -> DatasetSchema:
    return DatasetSchema("label", [f"I{i}" for i in range(1, 14)],
                         [SparseFeature(f"C{i + 1}", min(size, cap), multi_hot=hot > 1)
                          for i, (size, hot) in enumerate(zip(MLPERF_TABLE_SIZES, MLPERF_MULTI_HOT_SIZES))])


def make_batches(schema: DatasetSchema, n: int, batch: int, device: torch.device) -> list[Batch]:
    """n random batches on the device: each feature a bag of its reference size per row."""
    g = torch.Generator(device=device).manual_seed(0)
    out = []
    hots = torch.tensor(MLPERF_MULTI_HOT_SIZES, device=device, dtype=torch.int32)
    for _ in range(n):
        values = torch.cat([torch.randint(0, f.num_embeddings, (batch * h,), device=device, generator=g)
                            for f, h in zip(schema.sparse, MLPERF_MULTI_HOT_SIZES)])
        kjt = KeyedJaggedTensor(keys=schema.sparse_names, values=values,
                                lengths=hots.repeat_interleave(batch))
        out.append(Batch(torch.rand(batch, 13, device=device, generator=g), kjt,
                         torch.randint(0, 2, (batch,), device=device, generator=g).float()))
    return out


def bytes_per_sample(dim: int, weight_bytes: int) -> int:
    """The least table-memory traffic of one sample's forward and fused backward (docstring)."""
    return sum(h * dim * weight_bytes + 2 * dim * 4 + 2 * h * dim * weight_bytes + 2 * h * 4
               for h in MLPERF_MULTI_HOT_SIZES)


def copy_bandwidth(device: torch.device, size: int = 1 << 30) -> float:
    """Bytes read + written per second by a device-to-device copy of `size` bytes (best of 5)."""
    a = torch.empty(size // 4, dtype=torch.float32, device=device).uniform_()
    b = torch.empty_like(a)
    best = float("inf")
    for _ in range(6):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        b.copy_(a)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * size / best


def run_dtype(schema: DatasetSchema, dtype: str, precision: str, batch: int, steps: int, warmup: int, env,
              profile: bool = False) -> tuple[float, float]:
    """(samples/s, peak device memory in GiB) of `steps` timed training steps."""
    cfg = load_config(None, ["--model.name=dlrm_dcn", "--model.flavor=mlperf", f"--train.batch_size={batch}",
                             f"--embeddings.weights_dtype={dtype}", "--optimizer.name=adagrad",
                             "--embeddings.optimizer=rowwise_adagrad", f"--train.precision={precision}"])
    if env.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(env.device)
    model, optimizer = build_sharded_task(schema, cfg, env)
    pipeline = TrainPipelineSparseDist(model, optimizer, env.device)
    batches = make_batches(schema, 4, batch, env.device)
    it = itertools.cycle(batches)
    for _ in range(warmup):
        pipeline.progress(it)
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        pipeline.progress(it)
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    rate = steps * batch / (time.perf_counter() - t)
    if profile:
        print_top_operators(pipeline, it, env.device)
    peak = torch.cuda.max_memory_allocated(env.device) / 2**30 if env.device.type == "cuda" else 0.0
    del pipeline, model, optimizer
    gc.collect()  # sharded modules hold cycles: free this model before the next one is measured
    if env.device.type == "cuda":
        torch.cuda.empty_cache()
    return rate, peak


def print_top_operators(pipeline: TrainPipelineSparseDist, it, device: torch.device, steps: int = 10) -> None:
    """The 15 operators with the most device (or, on a CPU, self CPU) time over `steps` steps."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            pipeline.progress(it)
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cap", type=int, default=10_000_000, help="rows per table at most")
    p.add_argument("--batch", type=int, default=8192)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--dtypes", default="fp32,fp16", help="table weight dtypes")
    p.add_argument("--precisions", default="fp32,bf16", help="dense-layer precisions (train.precision)")
    p.add_argument("--profile", action="store_true", help="print the top operators of the last combination")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = p.parse_args(argv)
    quiet_libraries()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu for a smoke run")
    schema = capped_schema(args.cap)
    env = init_distributed()
    try:
        device = env.device
        bandwidth = copy_bandwidth(device, (1 << 30) if device.type == "cuda" else (64 << 20))
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        dim = FLAVORS["mlperf"].embedding_dim
        rows = sum(f.num_embeddings for f in schema.sparse)
        print(f"DLRM-DCNv2 (mlperf flavor) on {name}: {rows:,} table rows (cap {args.cap:,}) x {dim}, "
              f"batch {args.batch}, {sum(MLPERF_MULTI_HOT_SIZES)} ids per sample; copy bandwidth "
              f"{bandwidth / 1e9:,.0f} GB/s (read + write)")
        print("| tables | dense | samples/s | peak memory GiB | bytes/sample (tables) | ceiling samples/s "
              "| share of ceiling |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |", flush=True)
        combos = list(itertools.product(args.dtypes.split(","), args.precisions.split(",")))
        for i, (dtype, precision) in enumerate(combos):
            last = args.profile and i == len(combos) - 1
            rate, peak = run_dtype(schema, dtype, precision, args.batch, args.steps, args.warmup, env, last)
            need = bytes_per_sample(dim, BYTES[dtype])
            ceiling = bandwidth / need
            print(f"| {dtype} | {precision} | {rate:,.0f} | {peak:,.1f} | {need:,} | {ceiling:,.0f} "
                  f"| {rate / ceiling:.1%} |", flush=True)
    finally:
        shutdown(env)


if __name__ == "__main__":
    main()
