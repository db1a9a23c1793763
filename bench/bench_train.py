"""Training throughput of shardrec's step against plain PyTorch, measured in the same run.

    .venv/bin/python bench/bench_train.py [--steps 40] [--batch 2048] [--rows 100000] [--dim 64]

DLRM with 26 tables x rows x dim on synthetic batches, one process:
  baseline  the same torchrec.models.dlrm.DLRM unsharded, its nn.EmbeddingBags switched to
            sparse gradients, torch.optim.Adagrad on everything: the strong single-process
            PyTorch recipe (dense table gradients would be several times slower);
  shardrec  the same model through embeddings/ (planner, DMP, FBGEMM fused row-wise Adagrad)
            driven by TrainPipelineSparseDist and by TrainPipelineBase.
It prints samples/s of each and the ratio to the baseline: these machines are noisy, so only
ratios measured in one run are comparable. Batches are made up front so the reader is not timed.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from shardrec.configs.loader import load_config
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature
from shardrec.embeddings.tables import table_configs
from shardrec.launch.console import quiet_libraries
from shardrec.trainer.distributed import init_distributed, shutdown
from shardrec.trainer.loop import build_sharded_task
from shardrec.trainer.models.dlrm import DLRMFlavor
from shardrec.trainer.task import ClickTask
from torchrec.datasets.utils import Batch
from torchrec.distributed.train_pipeline import TrainPipelineBase, TrainPipelineSparseDist
from torchrec.models.dlrm import DLRM
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

warnings.filterwarnings("ignore")


def make_batches(n: int, batch: int, rows: int, tables: int, seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    keys = [f"C{i + 1}" for i in range(tables)]
    out = []
    for _ in range(n):
        ids = torch.randint(0, rows, (tables, batch), generator=g)
        kjt = KeyedJaggedTensor(keys=keys, values=ids.reshape(-1),
                                lengths=torch.ones(tables * batch, dtype=torch.int32))
        out.append(Batch(torch.rand(batch, 13, generator=g), kjt,
                         torch.randint(0, 2, (batch,), generator=g).float()))
    return out


def timed(step, batches: list[Batch], warmup: int) -> float:
    """samples/s of `step(batch)` over batches[warmup:]."""
    for b in batches[:warmup]:
        step(b)
    start = time.perf_counter()
    for b in batches[warmup:]:
        step(b)
    return sum(b.labels.numel() for b in batches[warmup:]) / (time.perf_counter() - start)


def baseline(schema: DatasetSchema, flavor: DLRMFlavor, batches: list[Batch], warmup: int) -> float:
    torch.manual_seed(0)
    ebc = EmbeddingBagCollection(table_configs(schema, flavor.embedding_dim))
    for bag in ebc.embedding_bags.values():
        bag.sparse = True  # sparse row gradients, which torch.optim.Adagrad applies row by row
    plain = ClickTask(DLRM(ebc, len(schema.dense), list(flavor.bottom_mlp), list(flavor.top_mlp)))
    opt = torch.optim.Adagrad(plain.parameters(), lr=0.01)

    def step(b: Batch) -> None:
        opt.zero_grad()
        plain(b)[0].backward()
        opt.step()

    return timed(step, batches, warmup)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    flavor = DLRMFlavor(args.dim, (512, 256, args.dim), (512, 256, 1))
    schema = DatasetSchema("label", [f"I{i + 1}" for i in range(13)],
                           [SparseFeature(f"C{i + 1}", args.rows) for i in range(26)])
    batches = make_batches(args.warmup + args.steps, args.batch, args.rows, 26)

    results = {"baseline: plain PyTorch, sparse EmbeddingBag + Adagrad":
               baseline(schema, flavor, batches, args.warmup)}

    from shardrec.trainer.registry import add_flavor

    # The registry holds its own copy of DLRM's flavors: register there, not in the module.
    add_flavor("dlrm", "bench", flavor)
    cfg = load_config(None, ["--model.name=dlrm", "--model.flavor=bench", f"--train.batch_size={args.batch}",
                             "--optimizer.name=adagrad"])
    env = init_distributed()
    try:
        for name, cls in (("shardrec TrainPipelineSparseDist", TrainPipelineSparseDist),
                          ("shardrec TrainPipelineBase", TrainPipelineBase)):
            model, optimizer = build_sharded_task(schema, cfg, env)
            pipeline = cls(model, optimizer, env.device)
            it = iter(batches)
            results[name] = timed(lambda _b, p=pipeline, i=it: p.progress(i), batches, args.warmup)
            del model, optimizer, pipeline
    finally:
        shutdown(env)

    base = next(iter(results.values()))
    print(f"DLRM, 26 tables x {args.rows:,} x {args.dim}, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"{args.steps} timed steps")
    for name, sps in results.items():
        print(f"  {name:<50} {sps:>10,.0f} samples/s   x{sps / base:.2f}")


if __name__ == "__main__":
    main()
