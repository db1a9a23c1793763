"""Placement of embedding tables: TorchRec's planner, sharders and DistributedModelParallel.

The model arrives built on the meta device; here TorchRec's EmbeddingShardingPlanner picks
a sharding type and compute kernel per table for the real topology, the sharders carry the
fused FBGEMM optimizer settings (the table update runs inside the backward kernel, so no
embedding gradient is ever materialised), and DistributedModelParallel materialises the
local shards and wraps the dense part in DDP.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode
from fbgemm_gpu.split_table_batched_embeddings_ops_training import WeightDecayMode
from shardrec.configs.errors import UserError
from shardrec.configs.tree import EmbeddingsConfig, TableConstraints
from shardrec.embeddings.comm_codec import comm_codecs
from shardrec.embeddings.tables import model_table_configs
from torch import nn
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.types import (
    HardwareConfig,
    KernelConfig,
    TopologyFactory,
    TrainerConfig,
)
from torchrec.distributed.types import CacheParams, ModuleSharder, ShardingPlan, ShardingType
from torchrec.modules.embedding_configs import DataType, EmbeddingConfig

FUSED_OPTIMIZERS = {
    "sgd": EmbOptimType.EXACT_SGD,
    "adagrad": EmbOptimType.EXACT_ADAGRAD,
    "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
}
WEIGHT_DECAY_MODES = {"l2": WeightDecayMode.L2, "decoupled": WeightDecayMode.DECOUPLE}
SHARDING_TYPES = [t.value for t in (
    ShardingType.TABLE_WISE, ShardingType.ROW_WISE, ShardingType.COLUMN_WISE,
    ShardingType.TABLE_ROW_WISE, ShardingType.TABLE_COLUMN_WISE, ShardingType.DATA_PARALLEL,
)]
COMPUTE_KERNELS = [k.value for k in (
    EmbeddingComputeKernel.FUSED, EmbeddingComputeKernel.DENSE, EmbeddingComputeKernel.FUSED_UVM,
    EmbeddingComputeKernel.FUSED_UVM_CACHING,
)]


class EmbeddingBagSharder(EmbeddingBagCollectionSharder):
    """TorchRec's EBC sharder, also offering row_wise and table_row_wise on CPU.

    The stock sharder lists those two only for CUDA, but their CPU path (gloo all-to-all and
    reduce-scatter over FBGEMM's CPU kernels) trains correctly; without them a CPU run could
    never exercise the plans a GPU cluster will use.
    """

    def sharding_types(self, compute_device_type: str) -> list[str]:
        types = super().sharding_types(compute_device_type)
        if compute_device_type == "cpu":
            types += [t for t in (ShardingType.ROW_WISE.value, ShardingType.TABLE_ROW_WISE.value) if t not in types]
        return types


def fused_params(cfg: EmbeddingsConfig) -> dict:
    # FATAL: an id outside its table raises instead of being clamped to row 0 with a log line
    # (FBGEMM's default, WARNING). The reader refuses such ids first, naming the file and row;
    # this is the second line for batches that come from elsewhere. It costs nothing extra:
    # the bounds check runs in every mode but NONE.
    params = {"optimizer": FUSED_OPTIMIZERS[cfg.optimizer], "learning_rate": cfg.lr,
              "bounds_check_mode": BoundsCheckMode.FATAL}
    if cfg.optimizer != "sgd":
        params["eps"] = cfg.eps
    if cfg.weight_decay:
        if cfg.optimizer != "rowwise_adagrad":
            raise UserError(f"config key 'embeddings.weight_decay': FBGEMM's fused {cfg.optimizer} has no weight "
                            "decay; use --embeddings.optimizer=rowwise_adagrad or weight_decay 0")
        params["weight_decay"] = cfg.weight_decay
        params["weight_decay_mode"] = WEIGHT_DECAY_MODES[cfg.weight_decay_mode]
    return params


def make_sharders(cfg: EmbeddingsConfig, pooled_stay_bf16: bool = False) -> list[ModuleSharder[nn.Module]]:
    # EmbeddingCollections (unpooled: behaviour histories) get TorchRec's own sharder, with
    # the same fused optimizer. pooled_stay_bf16: see comm_codec.BF16KeptCommCodec.
    codecs = comm_codecs(cfg.comm_precision, pooled_stay_bf16)
    return [EmbeddingBagSharder(fused_params=fused_params(cfg), qcomm_codecs_registry=codecs),
            EmbeddingCollectionSharder(fused_params=fused_params(cfg), qcomm_codecs_registry=codecs)]


def table_names(model: nn.Module) -> list[str]:
    return [c.name for c in model_table_configs(model)]


# Sharding types whose optimizer state has the same keys and shapes: a table may move between
# them when a checkpoint resumes at another world size. A data_parallel table is trained by
# the dense optimizer, and column-wise shards keep row-wise Adagrad state per column shard,
# so those stay what they were.
_INTERCHANGEABLE = {ShardingType.TABLE_WISE.value, ShardingType.ROW_WISE.value, ShardingType.TABLE_ROW_WISE.value}


def resume_pins(saved_plan: dict[str, str]) -> dict[str, list[str]]:
    """{table: sharding types it may take} so that a checkpoint written with `saved_plan`
    ({table: sharding type}) loads its optimizer state into the new plan, at any world size."""
    return {t: sorted(_INTERCHANGEABLE) if kind in _INTERCHANGEABLE else [kind] for t, kind in saved_plan.items()}


# FBGEMM's CPU lookup for non-fused tables (DenseTableBatchedEmbeddingBagsCodegen, which
# both the dense kernel and data_parallel use) ignores PoolingMode.NONE and returns one summed
# vector per bag (fbgemm-gpu-cpu 1.8: (B, features x dim) instead of one row per id), so an
# unpooled table (an EmbeddingCollection's: behaviour histories) only works fused on CPU.
_CPU_UNPOOLED_REFUSED = {"compute_kernels": EmbeddingComputeKernel.DENSE.value,
                         "sharding_types": ShardingType.DATA_PARALLEL.value}


def unpooled_tables(model: nn.Module) -> set[str]:
    """Names of the tables of the model's EmbeddingCollections (one vector per id)."""
    return {c.name for c in model_table_configs(model) if isinstance(c, EmbeddingConfig)}


def constraints(model: nn.Module, cfg: EmbeddingsConfig,
                pins: dict[str, list[str]] | None = None,
                device_type: str = "cpu") -> dict[str, ParameterConstraints]:
    """ParameterConstraints per table: the global lists, overridden per table by cfg.tables,
    narrowed by `pins` (see resume_pins) when a checkpoint is resumed, and on CPU by what
    FBGEMM's CPU kernels can do for unpooled tables (_CPU_UNPOOLED_REFUSED)."""
    names = table_names(model)
    unpooled = unpooled_tables(model) if device_type == "cpu" else set()
    unknown = sorted(set(cfg.tables) - set(names))
    if unknown:
        raise UserError(f"config key 'embeddings.tables': no table named {unknown}; the model's tables: {names}")
    out = {}
    for name in names:
        table = cfg.tables.get(name, TableConstraints())
        types = table.sharding_types or cfg.sharding_types
        kernels = table.compute_kernels or cfg.compute_kernels
        where = f"embeddings.tables.{name}" if name in cfg.tables else "embeddings"
        _check(types, SHARDING_TYPES, f"{where}.sharding_types")
        _check(kernels, COMPUTE_KERNELS, f"{where}.compute_kernels")
        if pins and name in pins:
            allowed = [t for t in (types or SHARDING_TYPES) if t in pins[name]]
            if not allowed:
                raise UserError(f"config key '{where}.sharding_types' {list(types)} excludes what table '{name}' "
                                f"was in the checkpoint being resumed ({pins[name]}): its optimizer state "
                                "would not fit")
            types = allowed
        if name in unpooled:
            types, kernels = (_without_refused(values, full, key, f"{where}.{key}", name) for values, full, key in
                              ((types, SHARDING_TYPES, "sharding_types"), (kernels, COMPUTE_KERNELS, "compute_kernels")))
        if table.min_partition % 4:
            raise UserError(f"config key '{where}.min_partition' must be a multiple of 4, got {table.min_partition}")
        if types or kernels or table.cache_load_factor or table.min_partition:
            out[name] = ParameterConstraints(
                sharding_types=list(types) or None, compute_kernels=list(kernels) or None,
                cache_params=CacheParams(load_factor=table.cache_load_factor) if table.cache_load_factor else None,
                min_partition=table.min_partition or None,
            )
    return out


def _without_refused(values: list[str], full: list[str], key: str, where: str, table: str) -> list[str]:
    """`values` (empty = all of `full`) less what FBGEMM's CPU kernels cannot do for an
    unpooled table; an error naming the key when nothing is left."""
    refused = _CPU_UNPOOLED_REFUSED[key]
    left = [v for v in (values or full) if v != refused]
    if values and not left:
        raise UserError(f"config key '{where}' {list(values)}: table '{table}' is unpooled (one vector per "
                        "id, a behaviour history's table), and on CPU FBGEMM's non-fused lookup (the dense "
                        "kernel, which data_parallel uses) sums each bag instead; on CPU such a table needs the "
                        "fused kernel and a sharded type (table_wise, row_wise, ...)")
    return left


def _check(values: list[str], allowed: list[str], key: str) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise UserError(f"config key '{key}': unknown {bad}; allowed: {allowed}")


def make_planner(model: nn.Module, cfg: EmbeddingsConfig, world_size: int, device_type: str,
                 batch_size: int, memory_bytes: int | None = None,
                 pins: dict[str, list[str]] | None = None) -> EmbeddingShardingPlanner:
    """TorchRec's planner for `world_size` ranks of `device_type` (memory per rank: detected
    defaults, or `memory_bytes` of HBM on cuda / of host memory on cpu)."""
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", min(world_size, 8)))
    hardware = None
    if memory_bytes:
        key = "hbm_cap_bytes" if device_type == "cuda" else "ddr_cap_bytes"
        hardware = HardwareConfig(**{key: memory_bytes})
    topology = TopologyFactory.create_topology(
        TrainerConfig(world_size=world_size, local_world_size=local_world_size),
        hardware_config=hardware,
        kernel_config=KernelConfig(compute_device=device_type),
    )
    # batch_size is per rank: the planner's cost model uses it to weigh communication.
    return EmbeddingShardingPlanner(topology=topology, batch_size=batch_size,
                                    constraints=constraints(model, cfg, pins, device_type))


def plan_sharding(model: nn.Module, cfg: EmbeddingsConfig, world_size: int, device: torch.device,
                  batch_size: int, pg: dist.ProcessGroup | None = None,
                  pins: dict[str, list[str]] | None = None, memory_bytes: int | None = None) -> ShardingPlan:
    """The planner's plan for this topology; collective (same on all ranks) when pg is given."""
    planner = make_planner(model, cfg, world_size, device.type, batch_size, memory_bytes, pins)
    sharders = make_sharders(cfg)
    if pg is not None:
        return planner.collective_plan(model, sharders, pg)
    return planner.plan(model, sharders)


def set_weights_dtype(model: nn.Module, dtype: str) -> None:
    """Store every table in `dtype` (fp32 / fp16): TorchRec reads the storage type from each
    table config's data_type, so it is set there, before planning, and not in the model."""
    data_type = {"fp32": DataType.FP32, "fp16": DataType.FP16}[dtype]
    for c in model_table_configs(model):
        c.data_type = data_type


def memory_gb_per_rank(cfg: EmbeddingsConfig, device_type: str, local_world_size: int) -> float:
    """embeddings.memory_gb_per_rank, or when 0 what this machine's device has: the GPU's
    memory, or host memory shared by the ranks on this node."""
    if cfg.memory_gb_per_rank:
        return cfg.memory_gb_per_rank
    if device_type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("planning for cuda on a machine without one: set embeddings.memory_gb_per_rank "
                            "(or `shardrec plan --memory-gb`) to the GPUs' memory")
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 1024**3
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return host / max(1, local_world_size)


def planner_inputs(model: nn.Module, cfg: EmbeddingsConfig, device_type: str, world_size: int,
                   memory_gb: float | None = None) -> int:
    """What train and `shardrec plan` both hand the planner besides the batch: the tables'
    storage type (set on the model's table configs) and the memory per rank in bytes."""
    set_weights_dtype(model, cfg.weights_dtype)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", min(world_size, 8)))
    return int((memory_gb or memory_gb_per_rank(cfg, device_type, local)) * 1024**3)


def shard_model(model: nn.Module, cfg: EmbeddingsConfig, device: torch.device, batch_size: int,
                pins: dict[str, list[str]] | None = None, pooled_stay_bf16: bool = False) -> DistributedModelParallel:
    """Plan (within `pins`, see resume_pins), then wrap `model` (built on meta) in DMP on
    `device`; parameters get initialised (from the current torch seed) on the device.
    `pooled_stay_bf16`: with bf16 communication, pooled embeddings reach the model in bf16
    from other ranks (comm_codec.BF16KeptCommCodec)."""
    world_size = dist.get_world_size()
    memory = planner_inputs(model, cfg, device.type, world_size)
    pg = dist.GroupMember.WORLD
    plan = plan_sharding(model, cfg, world_size, device, batch_size, pg, pins, memory)
    return DistributedModelParallel(module=model, device=device, plan=plan,
                                    sharders=make_sharders(cfg, pooled_stay_bf16),
                                    data_parallel_wrapper=DenseDataParallel())


class DenseDataParallel(DefaultDataParallelWrapper):
    """TorchRec's default (DDP over every unsharded parameter), except on one rank: there DDP
    would only copy each gradient into its buckets and all-reduce it with itself (measured in
    bench/bench_train.py: about 5% of a DLRM step on CPU), so the dense part stays as it is.
    State dict keys are the same either way (DMP strips DDP's `module.` prefix)."""

    def wrap(self, dmp: DistributedModelParallel, env, device: torch.device) -> None:
        one_rank = env.process_group is not None and env.process_group.size() == 1
        # DDP refuses a module without trainable dense parameters (matrix factorisation,
        # LightGCN: every parameter is a table); there is nothing to all-reduce then.
        if one_rank or not any(p.requires_grad for _, p in _dense_parameters(dmp)):
            dmp._dmp_wrapped_module = dmp._dmp_wrapped_module.to(device)
            return
        super().wrap(dmp, env, device)


def _dense_parameters(dmp: DistributedModelParallel):
    """The parameters DDP would wrap: those no sharded module owns."""
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    return in_backward_optimizer_filter(dmp._dmp_wrapped_module.named_parameters())


def describe_plan(dmp: DistributedModelParallel) -> dict[str, dict]:
    """{table: {"sharding_type", "compute_kernel", "ranks"}} of a sharded model."""
    out = {}
    for module_plan in dmp.plan.plan.values():
        for table, ps in module_plan.items():
            out[table] = {"sharding_type": ps.sharding_type, "compute_kernel": ps.compute_kernel,
                          "ranks": list(ps.ranks or [])}
    return out
