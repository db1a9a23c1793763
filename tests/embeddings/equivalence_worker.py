"""Worker for the sharded-vs-single-process equivalence tests (run by torch.multiprocessing).

Every world trains the same model from the same initial weights (one DCP checkpoint, loaded
into whatever shards the plan made) on the same global batches (rank r gets rows
[r*b, (r+1)*b) of each global batch of W*b rows), with plain SGD at one learning rate on both the fused tables
and the dense part (data_parallel tables are trained by the dense optimizer), so the
1-process and W-process runs follow the same math: TorchRec divides embedding gradients by
W in the all-to-all backward and DDP averages dense ones.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from shardrec.configs.loader import load_config
from shardrec.configs.tree import TableConstraints
from shardrec.data_pipeline.convert_arrow import arrow_to_batch
from shardrec.data_pipeline.reader import ShardReader
from shardrec.data_pipeline.schema import load_schema, split_files
from shardrec.embeddings.tables import table_name
from shardrec.trainer.distributed import init_distributed
from shardrec.trainer.evaluate import evaluate
from shardrec.trainer.loop import build_sharded_task
from shardrec.trainer.models.dlrm import FastDLRM
from shardrec.trainer.registry import traceable
from torchrec.distributed.train_pipeline import TrainPipelineBase, TrainPipelineSparseDist

STEPS = 20
GLOBAL_BATCH = 512


def config(data_dir: str, schema, case: dict):
    """The tiny preset with SGD everywhere; case = {"all": type} or {"tables": {table: type}},
    optionally with "comm": embeddings.comm_precision and "exchange": train.cpu_exchange.
    With case["preset"] (and "overrides"), that preset instead, every table of its model
    (whatever their names) of type case["all"] at a learning rate of case.get("lr", 0.5).

    Column shards are 4 wide, so column-wise plans really split the debug model's 8-wide tables.
    """
    lr = case.get("lr", 0.5)
    common = [f"--dataset.path={data_dir}", "--embeddings.optimizer=sgd", f"--embeddings.lr={lr}",
              "--optimizer.name=sgd", f"--optimizer.lr={lr}", "--optimizer.weight_decay=0",
              "--embeddings.weight_decay=0", "--eval.batch_size=512"]
    if "preset" in case:
        cfg = load_config(case["preset"], common + list(case.get("overrides", [])))
        cfg.embeddings.sharding_types = [case["all"]]
        return cfg
    cfg = load_config("tiny", common)
    names = [table_name(f.name) for f in schema.sparse]
    chosen = case.get("tables") or {t: case["all"] for t in names}
    cfg.embeddings.tables = {t: TableConstraints(sharding_types=[chosen[t]], min_partition=4) for t in names}
    cfg.embeddings.comm_precision = case.get("comm", "fp32")
    cfg.train.precision = case.get("precision", "fp32")
    cfg.train.cpu_exchange = case.get("exchange", "auto")
    return cfg


def local_batches(data_dir: str, rank: int, world_size: int):
    """This rank's slice of each of the first STEPS global batches of the train split."""
    schema = load_schema(data_dir)
    table = pa.concat_tables(pq.read_table(f, columns=schema.arrow_schema().names)
                             for f in split_files(data_dir, "train"))
    b = GLOBAL_BATCH // world_size
    return [arrow_to_batch(table.slice(i * GLOBAL_BATCH + rank * b, b), schema) for i in range(STEPS)]


def worker(rank: int, world_size: int, init_file: str, data_dir: str, init_ckpt: str,
           cases: dict[str, dict], out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    env = init_distributed()  # joins the group made above
    schema = load_schema(data_dir)
    batches = local_batches(data_dir, rank, world_size)
    results = {}
    for name, case in cases.items():
        cfg = config(data_dir, schema, case)
        # "pooled_fp32": the all-to-all hands pooled embeddings on in fp32 even where the model
        # would take them in bf16 (what shardrec did before BF16KeptCommCodec).
        FastDLRM.takes_bf16_embeddings = not case.get("pooled_fp32")
        try:
            model, optimizer = build_sharded_task(schema, cfg, env)
        finally:
            FastDLRM.takes_bf16_embeddings = True
        state = {"model": model.state_dict()}
        ckpt = f"{init_ckpt}-{case.get('preset', 'tiny')}"  # one set of initial weights per model
        if not Path(ckpt).exists():  # the first (reference) world writes the initial weights
            dcp.save(state, checkpoint_id=ckpt)
        dcp.load(state, checkpoint_id=ckpt)
        model.load_state_dict(state["model"])

        pipelined = traceable(cfg.model.name)
        pipeline = (TrainPipelineSparseDist if pipelined else TrainPipelineBase)(model, optimizer, env.device)
        it, losses = iter(batches), []
        for _ in range(STEPS):
            loss, _, _ = pipeline.progress(it)
            loss = loss.detach().clone()
            dist.all_reduce(loss)  # equal local batches: the mean of local means is the global mean
            losses.append(float(loss) / world_size)
        if pipelined:
            pipeline.detach()
        reader = ShardReader(data_dir, "test", schema, cfg.eval.batch_size, rank=rank,
                             world_size=world_size, drop_last=False, prefetch_batches=0)
        metrics = evaluate(model, reader, env.device)
        plan = {t: p.sharding_type for m in model.plan.plan.values() for t, p in m.items()}
        dists = sorted({type(d).__name__ for m in model.modules()
                        for d in [*getattr(m, "_output_dists", []), *getattr(m, "_input_dists", [])]})
        results[name] = {"losses": losses, "auc": metrics["auc"], "logloss": metrics["logloss"],
                         "rows": metrics["rows"], "plan": plan, "dists": dists}
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()
