"""`shardrec plan`: the sharding plan and memory per rank for a topology, without training.

The model is built on the meta device (no memory), TorchRec's planner runs offline for the
requested world size, device and memory, and the report lists per table its sharding type,
kernel and ranks, then the planner's storage estimate per rank (weights, optimizer state and
I/O buffers). A model that cannot fit is a `UserError` naming the table, or the total, and by
how much it is short.
"""

from __future__ import annotations

from dataclasses import dataclass

from shardrec.configs.errors import UserError
from shardrec.configs.tree import EmbeddingsConfig
from shardrec.embeddings.sharding import make_planner, make_sharders, planner_inputs
from shardrec.embeddings.tables import model_table_configs
from torch import nn
from torchrec.distributed.planner.types import PlannerError

GIB = 1024**3
# Optimizer state per row, in fp32 values: Adagrad keeps one per weight, row-wise Adagrad one per row.
STATE_VALUES = {"sgd": lambda dim: 0, "adagrad": lambda dim: dim, "rowwise_adagrad": lambda dim: 1}


@dataclass
class TableRow:
    name: str
    rows: int
    dim: int
    sharding_type: str
    compute_kernel: str
    ranks: list[int]


@dataclass
class PlanReport:
    world_size: int
    device: str
    memory_gb_per_rank: float
    tables: list[TableRow]
    gb_per_rank: list[float]  # the planner's estimate on the device's memory (HBM or host)


def table_gib(rows: int, dim: int, optimizer: str) -> float:
    """fp32 weights plus fused optimizer state of one table."""
    return rows * (dim + STATE_VALUES[optimizer](dim)) * 4 / GIB


def plan_offline(model: nn.Module, cfg: EmbeddingsConfig, world_size: int, device: str,
                 memory_gb: float | None, batch_size: int) -> PlanReport:
    """The plan `train` would make for `world_size` ranks of `device` (same planner inputs:
    embeddings.planner_inputs); memory_gb None = embeddings.memory_gb_per_rank or detected."""
    memory_gb = planner_inputs(model, cfg, device, world_size, memory_gb) / GIB
    configs = model_table_configs(model)
    total_memory = memory_gb * world_size
    for c in configs:
        need = table_gib(c.num_embeddings, c.embedding_dim, cfg.optimizer)
        if need > total_memory:
            raise UserError(
                f"table '{c.name}' ({c.num_embeddings:,} x {c.embedding_dim}) needs {need:.1f} GiB with "
                f"{cfg.optimizer} state, more than all {world_size} ranks hold together "
                f"({world_size} x {memory_gb:g} GiB = {total_memory:g} GiB): short by {need - total_memory:.1f} GiB"
            )
    planner = make_planner(model, cfg, world_size, device, batch_size, int(memory_gb * GIB))
    try:
        plan = planner.plan(model, make_sharders(cfg))
    except PlannerError as e:
        need = sum(table_gib(c.num_embeddings, c.embedding_dim, cfg.optimizer) for c in configs)
        raise UserError(
            f"no sharding plan fits {world_size} x {memory_gb:g} GiB: the tables need {need:.1f} GiB of "
            f"weights and optimizer state before I/O buffers (planner: {str(e).splitlines()[0]})"
        ) from None
    sizes = {c.name: (c.num_embeddings, c.embedding_dim) for c in configs}
    tables = [TableRow(name, *sizes[name], p.sharding_type, p.compute_kernel, sorted(set(p.ranks or [])))
              for module_plan in plan.plan.values() for name, p in module_plan.items()]
    per_rank = [0.0] * world_size
    # The planner keeps its storage estimate per shard only on the chosen options (there is
    # no public accessor in TorchRec 1.8); it is the number the planner fitted against memory.
    for option in planner._best_plan or []:
        for shard in option.shards:
            storage = shard.storage.hbm if device == "cuda" else shard.storage.ddr
            per_rank[shard.rank] += storage / GIB
    return PlanReport(world_size, device, memory_gb, tables, per_rank)


def format_report(report: PlanReport) -> str:
    lines = [f"{'table':<24} {'rows':>13} {'dim':>5}  {'sharding':<18} {'kernel':<18} ranks"]
    for t in report.tables:
        ranks = f"{t.ranks[0]}-{t.ranks[-1]}" if len(t.ranks) > 2 else ",".join(map(str, t.ranks))
        lines.append(f"{t.name:<24} {t.rows:>13,} {t.dim:>5}  {t.sharding_type:<18} {t.compute_kernel:<18} {ranks}")
    mem = "HBM" if report.device == "cuda" else "host memory"
    lines.append(f"\nestimated {mem} per rank (GiB, of {report.memory_gb_per_rank:g}):")
    lines += [f"  rank {r}: {gb:8.2f}" for r, gb in enumerate(report.gb_per_rank)]
    lines.append(f"  max {max(report.gb_per_rank):.2f} GiB, total {sum(report.gb_per_rank):.2f} GiB")
    return "\n".join(lines)
