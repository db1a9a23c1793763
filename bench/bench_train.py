"""Training throughput of shardrec against plain PyTorch and the stock TorchRec recipe, in one run.

    .venv/bin/python bench/bench_train.py [--steps 30] [--rounds 2] [--threads 2] [--batch 2048]
                                          [--rows 100000] [--dim 64] [--precision fp32,bf16]
                                          [--tables fp32,fp16] [--update aten,fbgemm] [--full]
                                          [--quality] [--ranks] [--rank-rounds 3] [--rank-steps 60]

The shape of issue 13: DLRM (torchrec.models.dlrm.DLRM) with 26 tables x rows x dim, bottom
MLP 512-256-dim, top MLP 512-256-1, batch 2,048, one process, pre-built synthetic batches (so
no reader is timed), measured back to back in one process:
  plain PyTorch   the model unsharded, its nn.EmbeddingBags with sparse gradients, one
                  torch.optim.Adagrad over everything (PyTorch's documented recipe for large
                  sparse tables; dense table gradients would be several times slower);
  TorchRec        the stock recipe of TorchRec's DLRM example: DLRMTrain, RowWiseAdagrad
                  applied in backward, EmbeddingShardingPlanner + DistributedModelParallel,
                  KeyedOptimizerWrapper(Adagrad) for the dense part, TrainPipelineSparseDist;
  shardrec step   `build_sharded_task` (what `shardrec train` builds) with its pipeline, for
                  each --precision value (train.precision: the dense layers), --tables
                  value (embeddings.weights_dtype: the tables' storage) and --update value
                  (embeddings.cpu_update: shardrec's ATen row-wise AdaGrad, or FBGEMM's
                  CPU kernel as TorchRec's recipe runs it).
Each is timed --rounds times, interleaved (A B C A B C), and the best round is kept: the
machine is shared and noisy, so only ratios within one run mean anything. Then the shardrec
step once more per precision (best of --rounds), in a process of its own set up as `shardrec
train` sets its process up (trainer/cpu_placement.py: glibc's malloc thresholds, core
binding); in this process those settings would reach the baselines too.
--full also runs `shardrec train --config bench_dlrm` for --full-steps steps on synthetic data
(made once with `shardrec synth --preset bench-dlrm` into --data) and reports its summary's
samples_per_s and the rate from step 50 on (metrics.jsonl; the step alone is timed after
warm-up steps too): the whole path (reader, pipeline, metrics) against the step alone.
--quality trains `shardrec train --config bench_dlrm` for --quality-steps steps with the
unoptimised fp32 step (fp32 dense layers and tables, FBGEMM's CPU update) and with each variant
(--precision x --tables x --update), and prints the test AUCs (the synthetic teacher data; same
samples) and each variant's difference from the unoptimised one.
--ranks runs the shardrec step as 1 rank x 1 thread and as 2 ranks x 1 thread (torchrun),
same per-rank batch, the 2 ranks once per --comm-precision entry (embeddings.comm_precision,
optionally ":<sharding type>" and "@<train.cpu_exchange>", e.g. bf16@process_group
for TorchRec's gloo all-to-all instead of the default shared memory): the scaling of the
sum of both ranks' samples/s; --rank-rounds rounds of --rank-steps steps, medians
reported (more than the single-process figures: a 2-rank step stalls whenever either core is
taken by something else, so its rounds scatter more on a shared VM).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from shardrec.configs.loader import load_config
from shardrec.configs.tree import Config
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature
from shardrec.embeddings.tables import table_configs
from shardrec.launch.console import quiet_libraries
from shardrec.trainer.distributed import init_distributed, shutdown
from shardrec.trainer.loop import build_sharded_task, set_up_process
from shardrec.trainer.models.dlrm import FLAVORS
from torchrec.datasets.utils import Batch
from torchrec.distributed.train_pipeline import TrainPipelineBase, TrainPipelineSparseDist
from torchrec.models.dlrm import DLRM, DLRMTrain
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
TABLES, DENSE = 26, 13


def bench_schema(rows: int) -> DatasetSchema:
    return DatasetSchema("label", [f"I{i + 1}" for i in range(DENSE)],
                         [SparseFeature(f"C{i + 1}", rows) for i in range(TABLES)])


def make_batches(n: int, batch: int, rows: int, tables: int = TABLES, seed: int = 0) -> list[Batch]:
    """n batches of `batch` rows: 13 uniform dense features, one uniform id per table."""
    g = torch.Generator().manual_seed(seed)
    keys = [f"C{i + 1}" for i in range(tables)]
    out = []
    for _ in range(n):
        ids = torch.randint(0, rows, (tables, batch), generator=g)
        kjt = KeyedJaggedTensor(keys=keys, values=ids.reshape(-1),
                                lengths=torch.ones(tables * batch, dtype=torch.int32))
        out.append(Batch(torch.rand(batch, DENSE, generator=g), kjt,
                         torch.randint(0, 2, (batch,), generator=g).float()))
    return out


def shardrec_config(batch: int, dim: int, extra: list[str] = ()) -> Config:
    """configs/bench_dlrm.yaml at this batch (its flavor is the shape with dim 64)."""
    if dim != FLAVORS["bench"].embedding_dim:
        raise SystemExit(f"--dim {dim}: the bench flavor has dim {FLAVORS['bench'].embedding_dim}")
    return load_config("bench_dlrm", [f"--train.batch_size={batch}", *extra])


def timed(step: Callable[[], None], steps: int, batch: int, warmup: int) -> float:
    """samples/s of `steps` calls of step() after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def plain_pytorch(schema: DatasetSchema, batches: list[Batch]) -> Callable[[], None]:
    torch.manual_seed(0)
    flavor = FLAVORS["bench"]
    ebc = EmbeddingBagCollection(table_configs(schema, flavor.embedding_dim))
    for bag in ebc.embedding_bags.values():
        bag.sparse = True  # sparse row gradients, which torch.optim.Adagrad applies row by row
    model = DLRMTrain(DLRM(ebc, DENSE, list(flavor.bottom_mlp), list(flavor.top_mlp)))
    opt = torch.optim.Adagrad(model.parameters(), lr=0.01)
    it = itertools.cycle(batches)

    def step() -> None:
        opt.zero_grad()
        model(next(it))[0].backward()
        opt.step()

    return step


def stock_torchrec(schema: DatasetSchema, batches: list[Batch], batch: int, env) -> Callable[[], None]:
    """TorchRec's DLRM example recipe, unchanged apart from the sizes."""
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter
    from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

    torch.manual_seed(0)
    flavor = FLAVORS["bench"]
    ebc = EmbeddingBagCollection(table_configs(schema, flavor.embedding_dim), device=torch.device("meta"))
    train_model = DLRMTrain(DLRM(ebc, DENSE, list(flavor.bottom_mlp), list(flavor.top_mlp),
                                 dense_device=env.device))
    apply_optimizer_in_backward(RowWiseAdagrad, train_model.model.sparse_arch.parameters(), {"lr": 0.05})
    planner = EmbeddingShardingPlanner(
        topology=Topology(local_world_size=1, world_size=1, compute_device=env.device.type),
        batch_size=batch, storage_reservation=HeuristicalStorageReservation(percentage=0.05))
    plan = planner.collective_plan(train_model, None, torch.distributed.GroupMember.WORLD)
    model = DistributedModelParallel(module=train_model, device=env.device, plan=plan)
    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(model.named_parameters())),
                                  lambda params: torch.optim.Adagrad(params, lr=0.01))
    pipeline = TrainPipelineSparseDist(model, CombinedOptimizer([model.fused_optimizer, dense]), env.device)
    it = itertools.cycle(batches)
    return lambda: pipeline.progress(it)


def shardrec_step(schema: DatasetSchema, batches: list[Batch], batch: int, env, extra: list[str],
                  set_up: bool = False) -> Callable[[], None]:
    """The step of `build_sharded_task` and its pipeline; with `set_up`, this process also
    gets `shardrec train`'s thread, core and allocator settings (set_up_process), which
    are process-wide: the rank workers' own processes take them, the in-process comparison
    with the baselines does not."""
    cfg = shardrec_config(batch, FLAVORS["bench"].embedding_dim, extra)
    if set_up:
        set_up_process(cfg, env)
    model, optimizer = build_sharded_task(schema, cfg, env)
    cls = TrainPipelineSparseDist if cfg.train.pipeline == "sparse_dist" else TrainPipelineBase
    pipeline = cls(model, optimizer, env.device)
    it = itertools.cycle(batches)
    return lambda: pipeline.progress(it)


def full_train(data: Path, steps: int, threads: int, extra: list[str]) -> dict:
    """`shardrec train --config bench_dlrm` on the synthetic data (made first if absent):
    its summary.json."""
    if not (data / "schema.json").is_file():
        subprocess.run([sys.executable, "-m", "shardrec", "synth", "--preset", "bench-dlrm", "--rows", "600000",
                        "--out", str(data)], check=True, cwd=ROOT, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-m", "shardrec", "train", "--config", "bench_dlrm",
                               f"--dataset.path={data}", "--run-dir", tmp, "--overwrite",
                               f"--train.max_steps={steps}", f"--train.num_threads={threads}",
                               "--train.progress=false", *extra], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        summary = json.loads((Path(tmp) / "summary.json").read_text())
        # Steady state, as the step alone is timed after warm-up steps: from the first logged
        # step (50) to the last, leaving out start-up (the pipeline's first step traces the model).
        logs = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
        logs = [r for r in logs if r.get("event") == "train" and "elapsed_s" in r]
        if len(logs) >= 2:
            summary["steady_samples_per_s"] = ((logs[-1]["step"] - logs[0]["step"]) * summary["samples"]
                                               / summary["steps"] / (logs[-1]["elapsed_s"] - logs[0]["elapsed_s"]))
        return summary


def launch_ranks(n: int, comm: str, dense: str, steps: int, batch: int, rows: int,
                 threads: int = 1, tables: str = "fp32", update: str = "aten") -> subprocess.Popen:
    """`n` rank workers under torchrun (the shardrec step, `threads` threads a rank, in a
    process set up as `shardrec train` sets it up: set_up_process); `comm` is
    embeddings.comm_precision, optionally ":<sharding type>" and then "@<train.cpu_exchange>";
    `tables` is embeddings.weights_dtype, `update` embeddings.cpu_update."""
    comm, _, exchange = comm.partition("@")
    precision, _, sharding = comm.partition(":")
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
         str(Path(__file__).resolve()), "--rank-worker", f"--steps={steps}", f"--batch={batch}", f"--rows={rows}",
         f"--comm-precision={precision}", f"--sharding={sharding}", f"--precision={dense}", f"--threads={threads}",
         f"--tables={tables}", f"--update={update}", f"--exchange={exchange or 'auto'}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, OMP_NUM_THREADS=str(threads)))


def rate(*procs: subprocess.Popen) -> float:
    """The summed samples/s the rank workers of `procs` report."""
    total = 0.0
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(err[-3000:])
        # Searched, not split by line: the ranks share torchrun's stdout, so one rank's line
        # can land in the middle of the other's.
        rates = re.findall(r"RANK_RATE (\d+\.\d+)", out)
        if not rates:
            raise SystemExit(f"no RANK_RATE line in the ranks' output:\n{out[-3000:]}")
        total += sum(map(float, rates))
    return total


def ranks_scaling(steps: int, batch: int, rows: int, comm: list[str], dense: str = "bf16",
                  rounds: int = 1) -> dict[str, float | list[float]]:
    """Summed samples/s of the shardrec step, 1 thread a rank, dense layers in `dense`
    precision (train.precision; configs/bench_dlrm.yaml's is bf16): {"1": one rank alone,
    "1+1": two independent one-rank jobs at once (the machine's ceiling for 2 ranks: no
    communication, only the cores and memory they share), "2 <comm>": 2 ranks with
    embeddings.comm_precision <comm>, for each of `comm`}. A `comm` entry "bf16:row_wise"
    also holds every table to that sharding type (default: the planner's choice, table-wise
    for these equal tables). With `rounds` > 1 each figure is the median of that many
    rounds, run one after the other (1, 1+1, 2 ...; 1, 1+1, 2 ...); "ratios <comm>" then
    lists each round's 2-rank / 1-rank ratio (the VM's speed drifts between rounds)."""

    def launch(n: int, c: str) -> subprocess.Popen:
        return launch_ranks(n, c, dense, steps, batch, rows)

    runs = []
    for _ in range(rounds):
        out = {"1": rate(launch(1, "fp32")), "1+1": rate(launch(1, "fp32"), launch(1, "fp32"))}
        for precision in comm:
            out[f"2 {precision}"] = rate(launch(2, precision))
        runs.append(out)
    result: dict[str, float | list[float]] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    if rounds > 1:
        for precision in comm:
            result[f"ratios {precision}"] = [round(r[f"2 {precision}"] / r["1"], 2) for r in runs]
    return result


def variant_name(precision: str, tables: str, update: str = "aten") -> str:
    """'fp32' (dense layers in fp32, fp32 tables, the ATen table update), 'fp32, fp16 tables',
    'fp32, FBGEMM update' ..."""
    return ", ".join([precision] + ([f"{tables} tables"] if tables != "fp32" else [])
                     + (["FBGEMM update"] if update == "fbgemm" else []))


def variant_overrides(precision: str, tables: str, update: str = "aten") -> list[str]:
    return [f"--train.precision={precision}", f"--embeddings.weights_dtype={tables}",
            f"--embeddings.cpu_update={update}"]


# The reference of --quality: the step before any optimisation of the arithmetic.
UNOPTIMISED = ("fp32", "fp32", "fbgemm")


def set_up_name(variant: str) -> str:
    return f"shardrec step ({variant}), own process set up as `shardrec train`"


def rank_worker(args) -> None:
    """Under torchrun: time this rank's shardrec step, print `RANK_RATE <samples/s>`."""
    env = init_distributed()
    try:
        schema = bench_schema(args.rows)
        batches = make_batches(8, args.batch, args.rows, seed=env.rank)
        overrides = [f"--train.num_threads={args.threads}", f"--embeddings.comm_precision={args.comm_precision}",
                     *variant_overrides(args.precision, args.tables, args.update)]
        if args.sharding:
            overrides.append(f"--embeddings.sharding_types=[{args.sharding}]")
        overrides.append(f"--train.cpu_exchange={args.exchange}")
        step = shardrec_step(schema, batches, args.batch, env, overrides, set_up=True)
        # One write (the newline included), so that the other rank's line cannot split it.
        sys.stdout.write(f"RANK_RATE {timed(step, args.steps, args.batch, args.warmup):.1f}\n")
        sys.stdout.flush()
    finally:
        shutdown(env)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", default="fp32", help="comma-separated train.precision values for shardrec's step")
    p.add_argument("--tables", default="fp32", help="comma-separated embeddings.weights_dtype values (fp32, "
                   "fp16) for shardrec's step, each with every --precision")
    p.add_argument("--update", default="aten", help="comma-separated embeddings.cpu_update values (aten, "
                   "fbgemm) for shardrec's step, each with every --precision and --tables")
    p.add_argument("--full", action="store_true", help="also time `shardrec train --config bench_dlrm`")
    p.add_argument("--data", type=Path, default=Path("/tmp/shardrec-bench-dlrm"))
    p.add_argument("--ranks", action="store_true", help="also time 2 ranks x 1 thread against 1 x 1")
    p.add_argument("--quality", action="store_true", help="also compare the test AUC of fp32 and the other "
                   "precisions after the same samples of `shardrec train`")
    p.add_argument("--rank-rounds", type=int, default=3, help="with --ranks: rounds (medians reported)")
    p.add_argument("--rank-steps", type=int, default=60, help="with --ranks: timed steps a rank and round")
    p.add_argument("--quality-steps", type=int, default=250)
    p.add_argument("--full-steps", type=int, default=300)
    p.add_argument("--comm-precision", default="fp32,bf16,bf16@process_group",
                   help="with --ranks: the embeddings.comm_precision values 2 ranks are timed with, each "
                   "optionally with a sharding type for every table (e.g. bf16:row_wise) and an "
                   "train.cpu_exchange (e.g. bf16@process_group; default auto)")
    p.add_argument("--exchange", default="auto", help=argparse.SUPPRESS)
    p.add_argument("--sharding", default="", help=argparse.SUPPRESS)
    p.add_argument("--rank-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    quiet_libraries()
    if args.rank_worker:
        return rank_worker(args)
    torch.set_num_threads(args.threads)
    precisions = args.precision.split(",")
    variants = {variant_name(p, t, u): (p, t, u) for p in precisions for t in args.tables.split(",")
                for u in args.update.split(",")}
    schema = bench_schema(args.rows)
    batches = make_batches(8, args.batch, args.rows)
    env = init_distributed()
    try:
        steps = {"plain PyTorch (sparse EmbeddingBag + Adagrad)": plain_pytorch(schema, batches),
                 "TorchRec stock recipe (DMP, fused RowWiseAdagrad)": stock_torchrec(schema, batches, args.batch, env)}
        for name, variant in variants.items():
            steps[f"shardrec step ({name})"] = shardrec_step(
                schema, batches, args.batch, env, variant_overrides(*variant))
        best = dict.fromkeys(steps, 0.0)
        for _ in range(args.rounds):
            for name, step in steps.items():
                best[name] = max(best[name], timed(step, args.steps, args.batch, args.warmup))
    finally:
        shutdown(env)
    for name, (precision, tables, update) in variants.items():
        # The same step in a process of its own that `set_up_process` has set up as
        # `shardrec train` does (cores, glibc malloc thresholds): those settings are
        # process-wide, so they would also reach the baselines if applied here.
        best[set_up_name(name)] = max(
            rate(launch_ranks(1, "fp32", precision, args.steps, args.batch, args.rows, args.threads, tables, update))
            for _ in range(args.rounds))
    if args.full:
        for name, variant in variants.items():
            summary = full_train(args.data, args.full_steps, args.threads, variant_overrides(*variant))
            best[f"shardrec train, whole path ({name}), summary.json"] = summary["samples_per_s"]
            best[f"shardrec train, whole path ({name}), after step 50"] = summary["steady_samples_per_s"]
    base = max(best["plain PyTorch (sparse EmbeddingBag + Adagrad)"],
               best["TorchRec stock recipe (DMP, fused RowWiseAdagrad)"])
    print(f"DLRM, {TABLES} tables x {args.rows:,} x {args.dim}, batch {args.batch}, {args.threads} threads, "
          f"best of {args.rounds} rounds of {args.steps} steps; ratios against the faster baseline")
    print("| run | samples/s | vs faster baseline |\n| --- | ---: | ---: |")
    for name, sps in best.items():
        print(f"| {name} | {sps:,.0f} | {sps / base:.2f}x |")
    if args.full:
        for name in variants:
            step = best[set_up_name(name)]
            full = best[f"shardrec train, whole path ({name}), after step 50"]
            print(f"whole path after step 50 / step alone ({name}): {full / step:.2f}")
    if args.quality:
        # Same data, same samples (--quality-steps x 2,048), the only difference the precision
        # of the dense layers or of the tables, or how the tables are updated.
        reference = variant_name(*UNOPTIMISED)
        runs = {name: full_train(args.data, args.quality_steps, args.threads, variant_overrides(*variant))
                for name, variant in {reference: UNOPTIMISED, **variants}.items()}
        print(f"quality after {args.quality_steps} steps ({args.quality_steps * args.batch:,} samples), test AUC "
              f"(teacher data): " + ", ".join(f"{p} {r['auc']:.4f}" for p, r in runs.items()))
        for p, r in runs.items():
            if p != reference:
                print(f"  {p} - {reference} (unoptimised): {r['auc'] - runs[reference]['auc']:+.4f}")
    if args.ranks:
        # The dense layers in the last --precision given (bf16 in `make bench`), as before.
        rates = ranks_scaling(args.rank_steps, args.batch, args.rows, args.comm_precision.split(","),
                              precisions[-1], args.rank_rounds)
        ratios = {k: rates.pop(k) for k in list(rates) if k.startswith("ratios ")}
        if args.rank_rounds > 1:
            print(f"(2 ranks: medians of {args.rank_rounds} rounds of {args.rank_steps} steps; 2-rank / 1-rank "
                  "ratio by round: "
                  + "; ".join(f"comm {k.split()[1]} {', '.join(f'{x:.2f}x' for x in v)}" for k, v in ratios.items())
                  + ")")
        one = rates.pop("1")
        print(f"| shardrec step, 1 rank x 1 thread | {one:,.0f} | |")
        both = rates.pop("1+1")
        print(f"| two independent 1-rank jobs at once (sum; no communication: the ceiling) | {both:,.0f} | "
              f"{both / one:.2f}x of 1 rank |")
        for name, two in rates.items():
            print(f"| shardrec step, 2 ranks x 1 thread (sum), comm {name.split()[1]} | {two:,.0f} | "
                  f"{two / one:.2f}x of 1 rank |")


if __name__ == "__main__":
    main()
