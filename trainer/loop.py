"""`run(cfg)`: the one training entry every launcher calls (CLI, torchrun, Ray Train).

    schema ─► model on meta ─► plan + DMP (embeddings/) ─► combined optimizer
    reader (this rank's row groups) ─► TorchRec train pipeline ─► metrics.jsonl
    end: DCP checkpoint ─► evaluate on cfg.eval.split over all ranks ─► summary.json

Order of trust: the config, the data set's files and the model are all checked before the
run folder is touched; then rank 0 locks the folder and checks what is in it (and the
checkpoint a resume names) before config.yaml is written. Every step's loss must be finite
on every rank, or the run stops naming the step and the batch's row groups, before any
checkpoint of the diverged model can be written.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import torch
from shardrec.configs.errors import UserError
from shardrec.configs.tree import Config
from shardrec.data_pipeline.convert_interactions import SEQUENCE_SOURCES
from shardrec.data_pipeline.interactions import UserItems, require_interactions
from shardrec.data_pipeline.negatives import NegativeSampler
from shardrec.data_pipeline.reader import ShardReader
from shardrec.data_pipeline.retrieval_reader import RetrievalReader
from shardrec.data_pipeline.schema import DatasetSchema, load_schema
from shardrec.embeddings.cpu_kernel_check import slow_rowwise_adagrad_note
from shardrec.embeddings.cpu_rowwise_adagrad import use_aten_update
from shardrec.embeddings.host_exchange import use_shared_memory_exchange
from shardrec.embeddings.sharding import describe_plan, resume_pins, shard_model
from shardrec.embeddings.weight_decay import CpuDecoupledDecay
from shardrec.trainer.checkpoint import (
    BEST,
    check_fingerprint,
    check_resumable,
    fingerprint,
    latest_checkpoint,
    load_checkpoint,
    read_info,
    resolve_checkpoint,
    save_checkpoint,
)
from shardrec.trainer.cpu_placement import place_cpu_process
from shardrec.trainer.distributed import DistEnv, init_distributed, on_rank0, shutdown
from shardrec.trainer.early_stopping import EarlyStopping, check_metric
from shardrec.trainer.evaluate import evaluate
from shardrec.trainer.library_logs import log_to_run_folder, stop_logging_to_run_folder
from shardrec.trainer.models.sequential import HISTORY, require_history
from shardrec.trainer.next_item_eval import evaluate_next_item
from shardrec.trainer.optim import lr_multiplier, make_optimizer, make_scheduler
from shardrec.trainer.progress import Progress
from shardrec.trainer.registry import build_model, family, traceable
from shardrec.trainer.retrieval_eval import RetrievalData, evaluate_topk
from shardrec.trainer.retrieval_task import RetrievalTask
from shardrec.trainer.run_dir import RunDir, default_run_dir
from shardrec.trainer.task import ClickTask, emulated_bf16_note
from torchrec.distributed.train_pipeline import TrainPipelineBase, TrainPipelineSparseDist


def run(cfg: Config) -> dict:
    """Train, evaluate and checkpoint as `cfg` says; returns the summary (also in summary.json)."""
    env = init_distributed(cfg.train.pg_timeout_minutes)
    try:
        return _run(cfg, env)
    finally:
        shutdown(env)


def build_sharded_task(schema: DatasetSchema, cfg: Config, env: DistEnv, saved_plan: dict | None = None,
                       data: RetrievalData | None = None):
    """ClickTask(model) (RetrievalTask(model) for a retrieval model, which needs `data`)
    built on meta, sharded by embeddings/, with its combined optimizer. `saved_plan`
    ({table: sharding type}) of a checkpoint to resume keeps each table's optimizer state
    loadable, at any world size (embeddings.sharding.resume_pins)."""
    if cfg.embeddings.weight_decay and cfg.embeddings.weight_decay_mode == "l2" and env.device.type == "cpu":
        raise UserError("config key 'embeddings.weight_decay_mode': l2 needs FBGEMM's CUDA kernels (its CPU kernels "
                        "ignore weight decay); on CPU use --embeddings.weight_decay_mode=decoupled")
    torch.manual_seed(cfg.train.seed)
    model = build_model(schema, cfg.model, torch.device("meta"))
    if family(cfg.model.name) != "ranking":
        task = retrieval_task(model, cfg, schema, data)
    else:
        task = ClickTask(model, precision=cfg.train.precision, device_type=env.device.type)
    # A model that casts its pooled embeddings to bf16 itself may receive them so.
    pooled_bf16 = cfg.train.precision == "bf16" and getattr(model, "takes_bf16_embeddings", False)
    dmp = shard_model(task, cfg.embeddings, env.device, cfg.train.batch_size,
                      resume_pins(saved_plan) if saved_plan else None, pooled_stay_bf16=pooled_bf16)
    if env.device.type == "cpu" and cfg.embeddings.cpu_update == "aten":
        use_aten_update(dmp)
    exchange = cfg.train.cpu_exchange
    if exchange == "shared_memory" and env.device.type != "cpu":
        raise UserError("config key 'train.cpu_exchange': shared_memory is for CPU ranks; GPUs exchange "
                        "through the process group (auto or process_group)")
    if env.device.type == "cpu" and exchange != "process_group":
        use_shared_memory_exchange(dmp, cfg.train.batch_size, 60 * cfg.train.pg_timeout_minutes,
                                   required=exchange == "shared_memory")
    return dmp, make_optimizer(dmp, cfg.optimizer)


def retrieval_task(model, cfg: Config, schema: DatasetSchema, data: RetrievalData | None) -> RetrievalTask:
    if cfg.train.precision != "fp32":
        raise UserError(f"config key 'train.precision': retrieval model '{cfg.model.name}' trains in fp32 only")
    if data is None:
        data = RetrievalData.load(cfg.dataset.path, schema, [cfg.dataset.train_split])
    r = cfg.retrieval
    log_q = None
    if r.loss == "softmax" and r.logq_correction:
        log_q = NegativeSampler(r.negatives, data.catalogue.train_count, None, r.popularity_alpha).log_q()
    return RetrievalTask(model, r.loss, r.negatives, log_q, r.temperature, r.l2)


def unwrap(model) -> torch.nn.Module:
    """The task inside DistributedModelParallel (with its sharded modules)."""
    return getattr(model, "module", model)


def restarted() -> bool:
    """This process is a restart of a failed attempt of the same job (torchrun --max-restarts)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def choose_checkpoint(cfg: Config, checkpoints: Path) -> Path | None:
    """The checkpoint this run resumes from, None for a fresh start (read-only). `auto`: the
    newest complete one, or none (also with --overwrite on a job's first attempt)."""
    choice = cfg.checkpoint.resume
    if choice == "auto":
        return None if cfg.overwrite and not restarted() else latest_checkpoint(checkpoints)
    if choice == "latest":
        path = latest_checkpoint(checkpoints)
        if path is None:
            raise UserError(f"checkpoint.resume is 'latest' but '{checkpoints}' holds no complete checkpoint "
                            "(checkpoint.resume=auto starts afresh in that case)")
        return path
    if not choice:
        return None
    path = Path(choice)
    if not (path / ".metadata").is_file():
        raise UserError(f"config key 'checkpoint.resume': '{path}' is not a checkpoint folder (no DCP .metadata inside)")
    return path


def open_run_dir(cfg: Config, run_dir: RunDir, expected: dict, world_size: int, path: str | None) -> None:
    """Rank 0: lock the run folder and check it suits this run before anything is written:
    a fresh run (`path` None) does not overwrite an earlier one unless told to; a resume
    checks the checkpoint's fingerprint and global batch, and drops what an interrupted
    attempt logged after it."""
    # A restarted attempt must not wipe what the first one saved.
    run_dir.open(fresh=path is None, overwrite=cfg.overwrite and not restarted())
    if path is None:
        return
    if cfg.checkpoint.resume in ("auto", "latest") and str(latest_checkpoint(run_dir.checkpoints)) != path:
        raise UserError(f"run folder '{run_dir.path}' changed while this run started (another writer?)")
    info = read_info(Path(path))
    check_fingerprint(Path(path), info, expected)
    check_resumable(Path(path), info, world_size, cfg.train.batch_size * world_size)
    if Path(path).parent == run_dir.checkpoints:
        run_dir.rewind(int(info["step"]))


def resume(cfg: Config, path: str | None, expected: dict, run_dir: RunDir, model, optimizer,
           scheduler) -> tuple[int, dict | None]:
    """Restore checkpoint `path`; returns (step, reader position), (0, None) for a fresh run.
    The model, both optimizers, the learning-rate schedule, the RNG (of the ranks the
    checkpoint had) and the reader position all continue where the checkpoint left off."""
    if path is None:
        return 0, None
    state = load_checkpoint(Path(path), model, expected, optimizer, for_resume=True)
    if state["rng"] is not None:
        torch.set_rng_state(state["rng"])
    scheduler.last_epoch = state["step"]
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = base * lr_multiplier(state["step"], cfg.optimizer)
    optimizer.step()  # hands the restored learning rate to the FBGEMM kernels; no gradients yet
    reader = state["info"]["reader"]
    run_dir.log({"event": "resume", "checkpoint": str(path), "step": state["step"], "epoch": reader["epoch"],
                 "batches": reader["batches"], "from_world_size": state["info"]["world_size"]})
    return state["step"], reader


def train_reader(cfg: Config, schema: DatasetSchema, env: DistEnv):
    """This rank's training batches: its own row groups, or its Ray Data shard under Ray Train."""
    if cfg.dataset.source == "ray_data":
        import ray.train
        from shardrec.data_pipeline.ray_source import RayDataReader

        try:
            shard = ray.train.get_dataset_shard(cfg.dataset.train_split)
        except RuntimeError:  # outside a Ray Train worker
            shard = None
        if shard is None:
            raise UserError("dataset.source 'ray_data' works only under `shardrec ray`, which hands each "
                            "worker its Ray Data shard")
        return RayDataReader(shard, schema, cfg.dataset.train_split, cfg.train.batch_size,
                             env.world_size, cfg.dataset.prefetch_batches, cfg.dataset.on_bad_dense)
    return ShardReader(cfg.dataset.path, cfg.dataset.train_split, schema, cfg.train.batch_size,
                       rank=env.rank, world_size=env.world_size, drop_last=True,
                       prefetch_batches=cfg.dataset.prefetch_batches,
                       shuffle_buffer=cfg.dataset.shuffle_buffer, seed=cfg.train.seed,
                       on_bad_dense=cfg.dataset.on_bad_dense,
                       # Pinned host memory lets the pipeline's copy to the GPU run asynchronously.
                       pin_memory=env.device.type == "cuda")


def validates(cfg: Config) -> bool:
    """Whether training scores eval.validation_split (every N steps, every epoch, or for early stopping)."""
    return bool(cfg.eval.every_steps or cfg.eval.every_epoch or cfg.train.early_stopping.metric)


def check_train_positions(cfg: Config, schema: DatasetSchema, kind: str) -> None:
    """retrieval.train_positions=all: a next-item model, one drawn negative per position;
    dataset.train_split=train_sequences / train_valid_sequences: the data set has it, and a
    split scored during training (validation, early stopping) is not one trained on."""
    r, split = cfg.retrieval, cfg.dataset.train_split
    if split in SEQUENCE_SOURCES and split not in schema.splits:
        raise UserError(f"dataset.train_split={split}: '{cfg.dataset.path}' has no such split; convert it "
                        "with `shardrec convert interactions ... --history N --train-sequences` (one row per user), "
                        "or train on its events with --dataset.train_split=train")
    trained_on = SEQUENCE_SOURCES.get(split, (split,))
    for name, scored in (("eval.validation_split", cfg.eval.validation_split if validates(cfg) else None),
                         ("eval.split", cfg.eval.split)):
        if scored in trained_on:
            raise UserError(f"dataset.train_split={split} trains on the '{scored}' events, which {name} scores: "
                            "score a split that is not trained on" + (
                                "; a final fit on train and valid runs without validation (no "
                                "train.early_stopping.metric, eval.every_epoch or eval.every_steps), for the "
                                "epochs that a run on train_sequences chose" if scored == "valid" else ""))
    if r.train_positions == "last":
        return
    if kind != "sequential":
        raise UserError(f"retrieval.train_positions=all supervises every position of a behaviour history; "
                        f"'{cfg.model.name}' is not a next-item model (sasrec, gru4rec)")
    if r.loss == "softmax" or r.negatives == "in_batch":
        raise UserError(f"retrieval.train_positions=all pairs each position with its own drawn negative: it needs "
                        f"retrieval.loss bce or bpr and retrieval.negatives uniform or popularity (got loss "
                        f"{r.loss}, negatives {r.negatives})")


def retrieval_train_reader(cfg: Config, schema: DatasetSchema, env: DistEnv, data: RetrievalData) -> RetrievalReader:
    """This rank's (user, item, negative) batches of an interactions data set."""
    if cfg.dataset.source != "parquet":
        raise UserError(f"retrieval model '{cfg.model.name}' reads its data set's Parquet files "
                        "(dataset.source=parquet)")
    inner = ShardReader(cfg.dataset.path, cfg.dataset.train_split, schema, cfg.train.batch_size,
                        rank=env.rank, world_size=env.world_size, drop_last=True, prefetch_batches=0,
                        shuffle_buffer=cfg.dataset.shuffle_buffer, seed=cfg.train.seed,
                        pin_memory=env.device.type == "cuda")
    r = cfg.retrieval
    seen = data.splits[cfg.dataset.train_split]
    sources = SEQUENCE_SOURCES.get(cfg.dataset.train_split, ())
    if sources and all(s in data.splits for s in sources):
        # every event the sequences hold, not only each user's last row
        seen = UserItems.union([data.splits[s] for s in sources])
    sampler = NegativeSampler(r.negatives, data.catalogue.train_count, seen, r.popularity_alpha)
    history = (HISTORY,) if family(cfg.model.name) == "sequential" else ()
    all_positions = bool(history) and r.train_positions == "all"
    return RetrievalReader(inner, data.catalogue, sampler, cfg.train.seed, cfg.dataset.prefetch_batches, history,
                           all_positions)


def eval_reader(cfg: Config, schema: DatasetSchema, env: DistEnv, split: str | None = None) -> ShardReader:
    return ShardReader(cfg.dataset.path, split or cfg.eval.split, schema, cfg.eval.batch_size,
                       rank=env.rank, world_size=env.world_size, drop_last=False,
                       prefetch_batches=cfg.dataset.prefetch_batches, on_bad_dense=cfg.dataset.on_bad_dense)


def _threads(cfg: Config) -> int:
    if cfg.train.num_threads:
        return cfg.train.num_threads
    # Processes on one node share its cores.
    return max(1, (os.cpu_count() or 1) // _local_world_size())


def _local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def set_up_process(cfg: Config, env: DistEnv) -> None:
    """torch's intra-op threads and, on CPU, the process's cores and allocator
    (train.cpu_affinity, train.malloc_tuning)."""
    threads = _threads(cfg)
    torch.set_num_threads(threads)
    if env.device.type == "cpu":
        place_cpu_process(threads, cfg.train.cpu_affinity, cfg.train.malloc_tuning, env.local_rank,
                          _local_world_size())


def make_scorer(cfg: Config, schema: DatasetSchema, env: DistEnv, data: RetrievalData | None):
    """score(model, split, final=False) -> metrics over all ranks: click metrics from the
    split's rows, or the top-K metrics of full ranking for a retrieval model. The readers
    (and their checks of the split) are made here, before the run folder is touched."""
    if data is not None and family(cfg.model.name) == "sequential":
        ks = cfg.retrieval.ks
        splits = dict.fromkeys([cfg.eval.split, cfg.eval.validation_split])
        readers = {s: eval_reader(cfg, schema, env, s) for s in splits}
        known = UserItems.union(list(data.splits.values()))  # each user's items in any split

        def score_next(model, split: str, final: bool = False) -> dict:
            return evaluate_next_item(unwrap(model), data, readers[split], known, ks, env.device,
                                      cfg.retrieval.sampled_negatives, cfg.train.seed)

        return score_next
    if data is not None:
        ks = cfg.retrieval.ks

        def score_topk(model, split: str, final: bool = False) -> dict:
            return evaluate_topk(unwrap(model), data, split, ks, env.device, cfg.retrieval.eval_users_per_chunk,
                                 baseline=final and cfg.retrieval.popularity_baseline,
                                 train_split=cfg.dataset.train_split)

        return score_topk
    readers = {cfg.eval.split: eval_reader(cfg, schema, env)}
    if validates(cfg):
        readers[cfg.eval.validation_split] = eval_reader(cfg, schema, env, cfg.eval.validation_split)

    def score_clicks(model, split: str, final: bool = False) -> dict:
        return evaluate(model, readers[split], env.device, cfg.eval.max_batches)

    return score_clicks


def validate(pipeline, model, score, env: DistEnv, cfg: Config, run_dir: RunDir, step: int) -> dict:
    """Score the validation split mid-training. The sparse-dist pipeline has rewritten the
    sharded modules' forward for its own batches, so it lets go of the model for the
    evaluation and takes it back after; its in-flight batches are kept."""
    if isinstance(pipeline, TrainPipelineSparseDist):
        pipeline.detach()
    metrics = score(model, cfg.eval.validation_split)
    run_dir.log({"event": "eval", "split": cfg.eval.validation_split, "step": step, **metrics})
    if isinstance(pipeline, TrainPipelineSparseDist):
        pipeline.attach(model)
    return metrics


def resolve_batch_size(cfg: Config, world_size: int) -> None:
    """Set train.batch_size (per rank) from train.global_batch_size when that is given."""
    if cfg.train.global_batch_size:
        if cfg.train.global_batch_size % world_size:
            raise UserError(f"config key 'train.global_batch_size' ({cfg.train.global_batch_size}) "
                            f"must be a multiple of the world size ({world_size})")
        cfg.train.batch_size = cfg.train.global_batch_size // world_size


class StepSync:
    """Per step, what every rank must agree on: whether any rank's loss is non-finite, and
    whether a time-based checkpoint is due (clocks differ between ranks, so rank 0's says).
    One small all-reduce per step when distributed, none in one process."""

    def __init__(self, env: DistEnv, every_minutes: float):
        self.env, self.every_s = env, every_minutes * 60
        self.last_save = time.monotonic()

    def saved(self) -> None:
        self.last_save = time.monotonic()

    def __call__(self, loss: torch.Tensor, step: int, epoch: int, batch: int, reader) -> tuple[float, bool]:
        """(this rank's loss, a time-based checkpoint is due); raises UserError naming the
        step and this rank's input when any rank's loss is NaN or inf."""
        value = float(loss)
        due = bool(self.every_s) and self.env.is_main and time.monotonic() - self.last_save >= self.every_s
        flags = [0.0 if math.isfinite(value) else 1.0, 1.0 if due else 0.0]
        if self.env.world_size > 1:
            t = torch.tensor(flags)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flags = t.tolist()
        if flags[0]:
            raise UserError(_diverged(value, step, epoch, batch, reader, self.env))
        return value, bool(flags[1])


def _diverged(value: float, step: int, epoch: int, batch: int, reader, env: DistEnv) -> str:
    source = getattr(reader, "describe_batch", lambda k: "")(batch)
    if math.isfinite(value):
        where, shown = f"on another rank (this is rank {env.rank})", "non-finite"
    else:
        where = f"on this rank (rank {env.rank}) from batch {batch} of epoch {epoch}" + (
            f", read from {source}" if source else "")
        shown = str(value)
    return (f"training diverged at step {step}: the loss is {shown} {where}. No checkpoint of the diverged "
            "model was written. Lower the learning rates (optimizer.lr, embeddings.lr), add warmup "
            "(optimizer.warmup_steps), or check that batch's rows")


def _run(cfg: Config, env: DistEnv) -> dict:
    set_up_process(cfg, env)
    resolve_batch_size(cfg, env.world_size)
    schema = load_schema(cfg.dataset.path)
    note = emulated_bf16_note(cfg.train.precision, env.device.type)
    if note:
        say(env, note)
    if env.is_main:  # a probe of ~30 ms; only rank 0 speaks
        note = slow_rowwise_adagrad_note(cfg.embeddings.optimizer, cfg.embeddings.weights_dtype, env.device.type,
                                          cfg.embeddings.cpu_update)
        if note:
            say(env, note)
    # Everything that can be refused is checked before the run folder is touched.
    kind = family(cfg.model.name)
    check_metric(cfg.train.early_stopping, kind != "ranking", cfg.retrieval.ks, next_item=kind == "sequential")
    data = None
    if kind != "ranking":
        require_interactions(schema, cfg.dataset.path, cfg.model.name)
        if kind == "sequential":
            require_history(schema, cfg.model.name)
        check_train_positions(cfg, schema, kind)
        # Next-item evaluation draws its candidates among items the user never had: every split.
        splits = list(schema.splits) if kind == "sequential" else []
        data = RetrievalData.load(cfg.dataset.path, schema,
                                  [cfg.dataset.train_split, cfg.eval.validation_split, cfg.eval.split, *splits])
        train = retrieval_train_reader(cfg, schema, env, data)
    else:
        train = train_reader(cfg, schema, env)
    score = make_scorer(cfg, schema, env, data)
    if not cfg.run_dir:
        # Rank 0 names the folder (a timestamp could differ between ranks) and tells the rest.
        name = [default_run_dir(cfg)]
        if env.world_size > 1:
            torch.distributed.broadcast_object_list(name, src=0)
        cfg.run_dir = name[0]
    run_dir = RunDir(cfg.run_dir, env.is_main)
    resume_from, saved_plan = on_rank0(env, lambda: _peek(choose_checkpoint(cfg, run_dir.checkpoints)))
    # What happens before the first step can take a while (planning, sharding): say so.
    say(env, f"data {cfg.dataset.path}: {len(train):,} steps per epoch of {cfg.train.batch_size * env.world_size:,} "
             f"rows; building {cfg.model.name}/{cfg.model.flavor} and sharding the tables of {len(schema.sparse)} features "
             f"over {env.world_size} x {env.device.type}" + (f"; resuming {resume_from}" if resume_from else ""))
    model, optimizer = build_sharded_task(schema, cfg, env, saved_plan, data)
    expected = fingerprint(cfg.model, schema)
    try:
        on_rank0(env, lambda: open_run_dir(cfg, run_dir, expected, env.world_size, resume_from))
        log_to_run_folder(run_dir.path, env.rank)  # rank 0 made the folder (on_rank0 waited for it)
        run_dir.write_config(cfg)
        try:
            return _train(cfg, env, schema, expected, run_dir, resume_from, model, optimizer, train, score)
        except UserError as e:
            run_dir.log({"event": "error", "message": str(e)})  # the run folder says why it stopped
            raise
    finally:
        stop_logging_to_run_folder()
        run_dir.close()  # flushes TensorBoard, releases the folder's lock


def say(env: DistEnv, line: str) -> None:
    """A status line on rank 0's console."""
    if env.is_main:
        print(line, flush=True)


def _peek(path: Path | None) -> tuple[str | None, dict | None]:
    """(checkpoint path, its sharding plan) to plan the model the checkpoint will load into."""
    return (None, None) if path is None else (str(path), read_info(path).get("plan"))


def _train(cfg: Config, env: DistEnv, schema: DatasetSchema, expected: dict, run_dir: RunDir,
           resume_from: str | None, model, optimizer, train, score) -> dict:
    scheduler = make_scheduler(optimizer, cfg.optimizer)
    global_batch = cfg.train.batch_size * env.world_size
    plan = describe_plan(model)
    info = {"fingerprint": expected, "world_size": env.world_size, "global_batch_size": global_batch,
            "batch_size": cfg.train.batch_size, "plan": {t: p["sharding_type"] for t, p in plan.items()}}

    # Steps: max_steps, or every batch of every epoch (a resumed epoch may hold a few more or
    # fewer batches than len(train) says when it continues at another world size).
    limit = cfg.train.max_steps or math.inf
    total = min(len(train) * cfg.train.epochs, limit)  # for progress and the ETA
    progress = Progress(total, global_batch, enabled=env.is_main,
                        bar=cfg.train.progress and sys.stderr.isatty(), log_every=cfg.train.log_every)
    sparse_dist = cfg.train.pipeline == "sparse_dist"
    if sparse_dist and not traceable(cfg.model.name):
        say(env, f"{cfg.model.name} cannot be traced by TrainPipelineSparseDist: training with TrainPipelineBase")
        sparse_dist = False
    pipeline_cls = TrainPipelineSparseDist if sparse_dist else TrainPipelineBase
    pipeline = pipeline_cls(model, optimizer, env.device)

    step, position = resume(cfg, resume_from, expected, run_dir, model, optimizer, scheduler)
    sync = StepSync(env, cfg.checkpoint.every_minutes)
    decay = CpuDecoupledDecay(model, cfg.embeddings.weight_decay) if cfg.embeddings.weight_decay else None
    value = None  # the last step's loss (for the checkpoints' shardrec.json)

    stopping = EarlyStopping(cfg.train.early_stopping)
    if resume_from:
        stopping.load_state_dict(read_info(Path(resume_from)).get("early_stopping"))
    # Validation after every epoch: asked for, or what early stopping does without every_steps.
    epoch_validation = validates(cfg) and bool(cfg.eval.every_epoch or not cfg.eval.every_steps)

    def save(in_epoch: int, root: Path = run_dir.checkpoints, keep: int = cfg.checkpoint.keep) -> None:
        save_checkpoint(root, step, model, optimizer, {**info, "loss": value, "reader": train.state_dict(in_epoch),
                                                      "early_stopping": stopping.state_dict()}, keep)
        if root == run_dir.checkpoints:  # a point to resume from: the time-based clock restarts
            sync.saved()

    def validate_and_decide(in_epoch: int) -> bool:
        """Score the validation split; keep the best weights; True: stop training."""
        metrics = validate(pipeline, model, score, env, cfg, run_dir, step)
        if not stopping.enabled:
            return False
        improved, stop = stopping.update(metrics, step)
        if improved:
            save(in_epoch, root=run_dir.checkpoints / BEST, keep=1)
        if stop:
            run_dir.log({"event": "early_stop", "step": step, "best_step": stopping.best_step,
                         cfg.train.early_stopping.metric: stopping.best_value})
        return stop

    start_step, start = step, time.perf_counter()
    first = position["epoch"] if position else 0
    train.set_epoch(first)
    if position:
        train.load_state_dict(position)  # continue mid-epoch, at this world size
    in_epoch = train.start_batch  # batches done in the current epoch (what checkpoints record)
    stopped = False
    for epoch in range(first, cfg.train.epochs):
        if step >= limit or stopped:
            break
        if epoch != first:
            train.set_epoch(epoch)
            in_epoch = 0
        batches = iter(train)
        while step < limit:
            try:
                loss, _, _ = pipeline.progress(batches)
            except StopIteration:
                break
            step, in_epoch = step + 1, in_epoch + 1
            if decay:
                decay.step()
            value, due = sync(loss, step, epoch, in_epoch - 1, train)
            scheduler.step()
            record = progress.step(step, epoch, value, lrs=[g["lr"] for g in optimizer.param_groups])
            if record:
                run_dir.log(record)
            if cfg.eval.every_steps and step % cfg.eval.every_steps == 0 and step < limit:
                stopped = validate_and_decide(in_epoch)
            every = cfg.checkpoint.every_steps and step % cfg.checkpoint.every_steps == 0
            if (every or due) and step < limit and not stopped:
                save(in_epoch)
            if stopped:
                break
        batches.close()
        if isinstance(pipeline, TrainPipelineBase):
            # TrainPipelineBase stays "stopped" after its iterator ran out, and would end every
            # later epoch at once; (TrainPipelineSparseDist takes each new iterator itself).
            pipeline.reset()
        if epoch_validation and not stopped:
            stopped = validate_and_decide(in_epoch)
    if stopping.enabled and not stopped and stopping.best_step != step and not epoch_validation:
        validate_and_decide(in_epoch)  # the last steps since the last validation may be the best
    wall = time.perf_counter() - start
    progress.close()
    if isinstance(pipeline, TrainPipelineSparseDist):
        # The pipeline rewrote the sharded modules' forward for its own use; restore it.
        pipeline.detach()

    # The trained model is saved before the final evaluation, so an evaluation that fails
    # cannot lose it.
    if cfg.checkpoint.save_final:
        save(in_epoch)
    scored = step
    if stopping.enabled and stopping.best_step is not None:
        # The final score is the best weights': load them from checkpoints/best.
        best = latest_checkpoint(run_dir.checkpoints / BEST)
        if best is None:
            raise UserError(f"early stopping: no complete best checkpoint in {run_dir.checkpoints / BEST}")
        scored = load_checkpoint(best, model, expected)["step"]
    metrics = score(model, cfg.eval.split, final=True)
    run_dir.log({"event": "eval", "split": cfg.eval.split, "step": step, "checkpoint_step": scored, **metrics})

    summary = {
        "model": cfg.model.name, "flavor": cfg.model.flavor, "world_size": env.world_size,
        "steps": step, "samples": step * global_batch, "wall_s": round(wall, 3),
        # Of this session only: a resumed run counts the steps it ran itself.
        "samples_per_s": round((step - start_step) * global_batch / wall, 1) if wall > 0 else 0.0,
        **summary_metrics(metrics), "eval_split": cfg.eval.split, "run_dir": str(run_dir.path),
        "plan": plan,
    }
    if cfg.eval.split in schema.teacher_auc:
        summary["teacher_auc"] = schema.teacher_auc[cfg.eval.split]
    if stopping.enabled:
        # best_epoch: the epochs of training the best weights had (what a final fit on train and
        # valid trains for: train.epochs = ceil(best_epoch)).
        summary.update({"best_step": scored, "best_epoch": round(scored / max(len(train), 1), 3),
                        "best_metric": cfg.train.early_stopping.metric,
                        "best_value": stopping.best_value, "stopped_early": stopped})
    run_dir.write_summary(summary)
    return summary


def summary_metrics(metrics: dict) -> dict:
    """The final evaluation's entries of summary.json: click metrics, or every top-K one."""
    if "auc" not in metrics:
        return dict(metrics)
    keys = ("auc", "logloss", "ne", "calibration", "accuracy", "mse", "label_rate")
    return {**{k: metrics[k] for k in keys}, "eval_rows": metrics["rows"]}


def evaluate_checkpoint(cfg: Config, checkpoint: str | None = None, split: str | None = None) -> dict:
    """Load a checkpoint of `cfg.run_dir` (the latest by default) and score it on a split."""
    env = init_distributed()
    try:
        return _evaluate_checkpoint(cfg, env, checkpoint, split)
    finally:
        shutdown(env)


def _evaluate_checkpoint(cfg: Config, env: DistEnv, checkpoint: str | None, split: str | None) -> dict:
    set_up_process(cfg, env)
    schema = load_schema(cfg.dataset.path)
    path = resolve_checkpoint(Path(cfg.run_dir), checkpoint)
    split = split or cfg.eval.split
    data = None
    if family(cfg.model.name) != "ranking":
        require_interactions(schema, cfg.dataset.path, cfg.model.name)
        data = RetrievalData.load(cfg.dataset.path, schema,
                                  [cfg.dataset.train_split, cfg.eval.validation_split, split, *schema.splits])
    model, _ = build_sharded_task(schema, cfg, env, data=data)
    state = load_checkpoint(path, model, fingerprint(cfg.model, schema))
    if data is not None:
        metrics = make_scorer(cfg, schema, env, data)(model, split, final=True)
    else:
        metrics = evaluate(model, eval_reader(cfg, schema, env, split), env.device, cfg.eval.max_batches)
    return {"checkpoint": str(path), "step": state["step"], "split": split or cfg.eval.split, **metrics}
