"""The typed configuration tree of a shardrec run.

Every field has a docstring-style comment right above it; `configs.loader` reads YAML
presets plus dotted CLI overrides (`--train.batch_size=4096`) into these dataclasses and
checks every key and type. Each component receives only its own section: the reader gets
`DatasetConfig`, the sharding code `EmbeddingsConfig`, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal


@dataclass(frozen=True)
class Range:
    """The allowed interval of a numeric key, checked at load (`Annotated[int, AtLeast(1)]`)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: the key must be > low (not >= low)

    def allows(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def __str__(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return " and ".join(parts)


def AtLeast(low: float) -> Range:  # noqa: N802 - reads as a type annotation
    return Range(low=low)


def Positive() -> Range:  # noqa: N802
    return Range(low=0, low_open=True)


# Shorthands for the annotations below.
PosInt = Annotated[int, Positive()]
PosFloat = Annotated[float, Positive()]
Count = Annotated[int, AtLeast(0)]  # 0 usually means "off" or "all"
NonNegFloat = Annotated[float, AtLeast(0)]


@dataclass
class DatasetConfig:
    """Where the data lives and how it is read."""

    # Folder written by `shardrec synth` or `shardrec convert`: schema.json plus one
    # subfolder of Parquet files per split.
    path: str = "data/demo"
    # Split used for training.
    train_split: str = "train"
    # Who reads the training split: `parquet`, each rank's own row groups (any launcher);
    # `ray_data`, Ray Data's reader with one shard per worker (only under `shardrec ray`).
    source: Literal["parquet", "ray_data"] = "parquet"
    # Decoded batches kept ready by the background reader thread (0 = read inline).
    prefetch_batches: Count = 4
    # Rows mixed in a shuffle buffer before batching (0 = read in file order).
    shuffle_buffer: Count = 0
    # A NaN, inf or null dense value: `error` stops the run naming the file, row group, row
    # and column; `zero` trains on 0 in its place (with a warning per block). Sparse ids
    # outside their table and bad labels always stop the run.
    on_bad_dense: Literal["error", "zero"] = "error"


@dataclass
class ModelConfig:
    """Which model to train: a registry name and one of its flavors."""

    # Registry name of the model (see `trainer.registry.MODELS`).
    name: str = "dlrm"
    # Size preset of the model: `debug` is tiny (tests); `shardrec models` and docs/models.md
    # list every model's flavors with their parameter counts.
    flavor: str = "small"
    # Feature pairs to cross, as "a:b" (e.g. user_id:genres); names must be the data set's
    # sparse features. wide_deep: they replace the flavor's own crosses. Any other click
    # model: Wide&Deep's cross-product terms are added to its logit, one scalar weight per
    # pair of ids (tables `cross_<a>_x_<b>`, exact ids up to 1M pairs, hashed beyond).
    cross_pairs: list[str] = field(default_factory=list)
    # Dropout rate after every hidden ReLU layer of the model's MLPs (deep towers, DLRM's
    # bottom and top MLPs); 0 = none. Off at evaluation, prediction and export.
    dropout: Annotated[float, Range(0, 0.9)] = 0.0
    # Batch normalisation before every hidden ReLU of the model's MLPs (the same layers
    # model.dropout reaches): Linear -> BatchNorm -> ReLU (-> Dropout), as FuxiCTR's
    # `batch_norm` option. Evaluation, prediction and export use the running statistics.
    batch_norm: bool = False
    # Add a first-order (logistic-regression) term w0 + sum_f w_f(id_f) + <w, x> to the model's
    # logit, with its own scalar tables `lin_<feature>` (sharded and optimised like any
    # other): the "linear part" DeepCTR gives every model. For the models without one
    # (dlrm, dlrm_dcn, dcn, dcnv2, dnn); the others have it built in.
    first_order: bool = False
    # Width of every embedding row, replacing the flavor's (0 = the flavor's own). DLRM's
    # bottom MLP, whose last layer must match it, ends at this width too.
    embedding_dim: Count = 0


@dataclass
class TableConstraints:
    """What the sharding planner may do with one table (empty lists = no restriction)."""

    # Sharding types allowed for this table: table_wise, row_wise, column_wise,
    # table_row_wise, table_column_wise, data_parallel.
    sharding_types: list[str] = field(default_factory=list)
    # Compute kernels allowed: fused (FBGEMM, optimizer in backward), dense, and on GPU
    # fused_uvm (table in host memory) or fused_uvm_caching (host memory + a GPU cache).
    # On CPU a behaviour history's table (unpooled) is always fused and never data_parallel:
    # FBGEMM's CPU non-fused lookup sums each bag.
    compute_kernels: list[str] = field(default_factory=list)
    # With fused_uvm_caching: the fraction of the table's rows the GPU cache holds (0 = planner's choice).
    cache_load_factor: Annotated[float, Range(0, 1)] = 0.0
    # Width of the column shards of column_wise / table_column_wise sharding (0 = TorchRec's
    # default of 128 columns; a multiple of 4, as FBGEMM's kernels require).
    min_partition: Count = 0


@dataclass
class EmbeddingsConfig:
    """Embedding tables: placement and their fused (in-backward) optimizer."""

    # Fused FBGEMM optimizer applied to the embedding tables inside the backward pass.
    optimizer: Literal["sgd", "adagrad", "rowwise_adagrad"] = "rowwise_adagrad"
    # Learning rate of the fused embedding optimizer.
    lr: PosFloat = 0.05
    # Epsilon of the Adagrad-type embedding optimizers.
    eps: PosFloat = 1e-8
    # Weight decay of the fused embedding optimizer (FBGEMM applies it to the rows a batch
    # touches; only rowwise_adagrad supports it). Tables the planner makes data-parallel are
    # updated by the dense optimizer instead and take optimizer.weight_decay.
    weight_decay: NonNegFloat = 0.0
    # How: "decoupled" scales each row a step updates by (1 - lr * weight_decay), AdamW-style;
    # "l2" adds weight_decay * w to its gradient before Adagrad's scaling (CUDA only: FBGEMM's
    # CPU kernels ignore weight decay, and shardrec applies the decoupled rule itself there).
    weight_decay_mode: Literal["decoupled", "l2"] = "decoupled"
    # Storage type of the table weights: fp16 halves their memory (FBGEMM rounds the updates
    # stochastically on GPU, to nearest on CPU); the optimizer state stays fp32.
    weights_dtype: Literal["fp32", "fp16"] = "fp32"
    # How CPU tables are updated in backward: "aten" (shardrec's row-wise AdaGrad in ATen's
    # vectorised, multi-threaded ops, 2-3x faster than FBGEMM's CPU kernels where measured,
    # docs/benchmarks.md; it covers fp32 and fp16 tables with rowwise_adagrad and pooled
    # lookups, the others keep FBGEMM's) or "fbgemm" (FBGEMM's CPU kernel for every table).
    # GPUs always run FBGEMM's kernels.
    cpu_update: Literal["aten", "fbgemm"] = "aten"
    # Precision of the embeddings and their gradients sent between ranks (the all-to-alls and
    # reduce-scatters of sharded tables): bf16 halves those bytes (embeddings/comm_codec.py).
    comm_precision: Literal["fp32", "bf16"] = "fp32"
    # Memory each rank gives the planner for tables, optimizer state and buffers, in GiB (HBM
    # on GPU, host memory on CPU); 0 = what the device has (GPU memory, or this machine's
    # memory shared by the ranks on it). `shardrec plan` uses the same value.
    memory_gb_per_rank: NonNegFloat = 0.0
    # Sharding types the planner may choose from for every table (empty = any the sharder offers).
    sharding_types: list[str] = field(default_factory=list)
    # Compute kernels the planner may choose from for every table (empty = any).
    compute_kernels: list[str] = field(default_factory=list)
    # Per-table constraints by table name (`t_<feature>`), overriding the two lists above,
    # e.g. --embeddings.tables.t_C3.sharding_types=row_wise
    tables: dict[str, TableConstraints] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    """The dense optimizer (MLPs, interaction layers, data-parallel tables)."""

    # Optimizer of the dense parameters.
    name: Literal["sgd", "adagrad", "adam"] = "adagrad"
    # Learning rate of the dense optimizer.
    lr: PosFloat = 0.01
    # L2 weight decay of the dense optimizer.
    weight_decay: NonNegFloat = 0.0
    # Learning-rate schedule of both the dense and the embedding optimizer, as in the MLPerf
    # DLRM reference: linear warmup from 0 over `warmup_steps`, constant, then polynomial
    # decay to 0 over `decay_steps` starting at `decay_start_step` (0 steps = no warmup /
    # no decay).
    warmup_steps: Count = 0
    # Step at which the polynomial decay starts.
    decay_start_step: Count = 0
    # Length of the decay; the learning rate is 0 after decay_start_step + decay_steps.
    decay_steps: Count = 0
    # Exponent of the polynomial decay (the reference uses 2).
    decay_power: PosFloat = 2.0


@dataclass
class EarlyStoppingConfig:
    """Stop when the validation split's metric stops improving; score the best weights."""

    # Validation metric that decides ("" = no early stopping). With a metric set, the split
    # `eval.validation_split` is scored every `eval.every_steps` steps, or after every epoch
    # when that is 0; the best weights are kept in checkpoints/best/ and the final test score
    # is theirs.
    # Click models: auc, logloss, ne, accuracy or mse. Retrieval models: a top-K metric of
    # retrieval.ks, e.g. ndcg@10, recall@20, hit@10, mrr@10, precision@10.
    metric: str = ""
    # "max" or "min"; "auto" = max for auc, accuracy and the top-K metrics, min for logloss,
    # ne and mse.
    mode: Literal["auto", "max", "min"] = "auto"
    # Validations in a row without an improvement before training stops.
    patience: PosInt = 2
    # An improvement must beat the best value by more than this.
    min_delta: NonNegFloat = 0.0


@dataclass
class TrainConfig:
    """The training loop."""

    # Rows per step on each rank.
    batch_size: PosInt = 2048
    # Rows per step over all ranks; when set (> 0) it wins over batch_size, which becomes
    # global_batch_size / world size (it must divide evenly).
    global_batch_size: Count = 0
    # Passes over the training split.
    epochs: PosInt = 1
    # Stop after this many steps (0 = run all epochs).
    max_steps: Count = 0
    # Seed of model initialisation and data shuffling.
    seed: Count = 0
    # Write a metrics.jsonl line (and a log line when stderr is not a terminal) every N steps.
    log_every: PosInt = 50
    # `sparse_dist`: TorchRec's TrainPipelineSparseDist (overlaps input distribution with
    # compute); `base`: the plain one-batch-at-a-time pipeline.
    pipeline: Literal["sparse_dist", "base"] = "sparse_dist"
    # Compute precision of the dense layers: bf16 runs them under autocast (GPU, or a CPU
    # with bf16 instructions: avx512_bf16 or AMX; on other CPUs it is emulated and slower
    # than fp32, and the run says so); the loss and the optimizer state stay fp32. fp16 is not offered:
    # it needs loss scaling, which TorchRec's train pipelines do not apply.
    precision: Literal["fp32", "bf16"] = "fp32"
    # Intra-op CPU threads for torch (0 = all cores).
    num_threads: Count = 0
    # CPU runs: `auto` binds each local rank to its own cores when several ranks share a
    # node and their threads fit its cores (trainer/cpu_placement.py); `none` leaves the
    # placement to the kernel.
    cpu_affinity: Literal["auto", "none"] = "auto"
    # CPU runs: keep the step's large buffers in glibc's heap for reuse instead of mapping
    # and unmapping them every step (trainer/cpu_placement.py; no effect off glibc).
    malloc_tuning: bool = True
    # Show a progress bar when stderr is a terminal.
    progress: bool = True
    # Timeout of the process group's collectives, in minutes: a rank that waits longer for
    # a lost peer fails, so torchrun or Ray can restart the job (gloo's own default is 30).
    pg_timeout_minutes: PosFloat = 10.0
    # How CPU ranks exchange sparse features and pooled embeddings (the all-to-alls of table-
    # and column-wise tables) and dense gradients (DDP's all-reduce): "shared_memory" through
    # files in /dev/shm, when every rank is on one x86-64 host (embeddings/host_exchange.py:
    # fewer passes over the data than gloo's loopback TCP; 2 ranks x 1 thread 1.73x one rank
    # against 1.41x, docs/benchmarks.md), "process_group" through gloo, "auto" shared memory
    # where possible, else the process group. GPUs always use the process group.
    cpu_exchange: Literal["auto", "shared_memory", "process_group"] = "auto"
    # Early stopping on a validation metric (see EarlyStoppingConfig).
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class EvalConfig:
    """Evaluation during and after training."""

    # Split scored at the end of training (and by `shardrec eval`).
    split: str = "test"
    # Rows per evaluation batch on each rank.
    batch_size: PosInt = 8192
    # Evaluate at most this many batches (0 = the whole split).
    max_batches: Count = 0
    # Also score `validation_split` every N training steps (0 = only at the end): the AUC
    # curve in TensorBoard, metrics.jsonl and `shardrec report`.
    every_steps: Count = 0
    # Also score `validation_split` after every epoch.
    every_epoch: bool = False
    # Split scored during training.
    validation_split: str = "valid"


@dataclass
class RetrievalConfig:
    """Retrieval models (mf, ncf, two_tower, lightgcn) on `shardrec convert interactions` data."""

    # bpr: pairwise loss with one negative per positive; bce: the positive scored towards 1
    # and the negative towards 0 (SASRec's); softmax: each user's positive item among the
    # batch's candidates (see `negatives`), with the logQ correction.
    loss: Literal["bpr", "bce", "softmax"] = "bpr"
    # Where negatives come from: uniform over the catalogue, popularity (drawn with
    # probability proportional to (training count + 1) ** popularity_alpha), or in_batch (the
    # other rows' positive items; no draw).
    negatives: Literal["uniform", "popularity", "in_batch"] = "uniform"
    # Exponent of popularity-based sampling (0 = uniform, 1 = proportional to counts).
    popularity_alpha: Annotated[float, Range(0, 2)] = 0.75
    # softmax: logits are divided by this.
    temperature: PosFloat = 1.0
    # softmax: subtract log Q(item), each candidate's sampling probability.
    logq_correction: bool = True
    # L2 penalty on the batch's id embeddings (mean over rows of their squared norms).
    l2: NonNegFloat = 0.0
    # Cut-offs K of the top-K metrics (recall@K, ndcg@K, ... in summary.json).
    ks: list[int] = field(default_factory=lambda: [10, 20])
    # Users scored against the whole catalogue at once in evaluation, per rank.
    eval_users_per_chunk: PosInt = 1024
    # Also score the popularity baseline in the final evaluation (popularity_* keys).
    popularity_baseline: bool = True
    # Next-item models (sasrec, gru4rec): items the user never interacted with that each
    # held-out event is ranked against for hr@K / ndcg@K (the SASRec paper's 100); the
    # *_full metrics rank it against the whole catalogue.
    sampled_negatives: PosInt = 100
    # Next-item models: which positions of each training row's history are supervised. last:
    # the row's own event only (one target a row); all: every position predicts the item
    # after it (SASRec's and GRU4Rec's training), with its own drawn negative. `all` suits
    # the split `convert interactions --train-sequences` writes (dataset.train_split=
    # train_sequences: one row per user, its whole training sequence; train_valid_sequences:
    # the same followed by the user's valid item, for a final fit scored on test).
    train_positions: Literal["last", "all"] = "last"


@dataclass
class CheckpointConfig:
    """torch.distributed.checkpoint snapshots in the run folder."""

    # Save a checkpoint when training ends.
    save_final: bool = True
    # Also save every N steps (0 = only at the end).
    every_steps: Count = 0
    # Also save when this many minutes have passed since the last save (0 = off); rank 0's
    # clock decides for all ranks. For long jobs on machines that can die.
    every_minutes: NonNegFloat = 0.0
    # Keep at most this many checkpoints (oldest are deleted first; 0 = keep all).
    keep: Count = 2
    # Continue a run: "auto" (the newest complete checkpoint of run_dir, or a fresh start when
    # there is none: one command both starts and restarts a job; the default of torchrun and
    # Ray launches), "latest" (the newest, which must exist), a checkpoint folder, or "" to
    # start afresh. Any world size may resume; model, flavor, data set and global batch size
    # must be the checkpoint's (each is checked, naming the key).
    resume: str = ""


@dataclass
class RayConfig:
    """Ray Train settings used by `shardrec ray`."""

    # Number of Ray Train workers (ranks).
    num_workers: PosInt = 2
    # CPUs each worker asks Ray for (fractions leave room for Ray Data readers).
    cpus_per_worker: PosFloat = 1.0
    # Give each worker one GPU.
    use_gpu: bool = False
    # Where run folders go when --run-dir is not given (a folder every node sees, e.g.
    # /shared/runs); "" = runs/ under the current folder. A `ray job submit` job runs in
    # Ray's temporary copy of the working directory, so it needs this or --run-dir.
    storage_path: str = ""
    # Restarts of the worker group after a worker dies (Ray Train's FailureConfig; -1 =
    # unlimited); each restart resumes from the newest checkpoint in the run folder.
    max_failures: Annotated[int, AtLeast(-1)] = 3
    # Elastic training: with 0 < min_workers < num_workers Ray Train runs on as many workers
    # as it can get between the two, and a job that loses a machine continues on fewer
    # (needs train.global_batch_size, so a step keeps its size). 0 = exactly num_workers.
    min_workers: Count = 0


@dataclass
class Config:
    """A whole run. `run_dir` is where config.yaml, metrics and checkpoints go."""

    # Output folder of the run (default: runs/<model>-<timestamp>).
    run_dir: str = ""
    # A fresh run into a run_dir that holds an earlier run's checkpoints or summary.json
    # removes them (true) instead of refusing to start (false). `--overwrite` on the CLI.
    overwrite: bool = False
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    embeddings: EmbeddingsConfig = field(default_factory=EmbeddingsConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    ray: RayConfig = field(default_factory=RayConfig)
