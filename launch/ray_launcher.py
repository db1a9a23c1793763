"""`shardrec ray`: run `run(cfg)` on Ray Train workers (the entry used by `ray job submit`).

    ray job submit --working-dir . -- shardrec ray --config FILE --num-workers 16

Ray Train's TorchTrainer starts the workers and makes their process group (gloo on CPU,
NCCL with GPUs); each worker then calls the same `trainer.loop.run(cfg)` as every other
launcher. With `dataset.source: ray_data`, Ray Data reads the training split and hands each
worker its shard. Paths are made absolute here: workers run in Ray's copy of the working
directory, so data and run folders must be on storage every node sees.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from shardrec.configs.errors import UserError
from shardrec.configs.loader import build
from shardrec.configs.tree import Config


def _worker(config: dict) -> None:
    import ray.train
    from shardrec.launch.console import quiet_libraries

    quiet_libraries()  # before anything imports TorchRec (FBGEMM logs as it loads)
    from shardrec.trainer.loop import run

    summary = run(build(Config, config, prefix=""))
    # Every worker reports (Ray Train expects all to); only numbers go into Ray's metrics.
    ray.train.report({k: v for k, v in summary.items() if isinstance(v, (int, float))})


def _scaling(cfg: Config):
    """ScalingConfig: a fixed number of workers, or (min, max) for elastic training."""
    from ray.train import ScalingConfig

    workers: int | tuple[int, int] = cfg.ray.num_workers
    if cfg.ray.min_workers:
        if cfg.ray.min_workers > cfg.ray.num_workers:
            raise UserError(f"config key 'ray.min_workers' ({cfg.ray.min_workers}) must be at most "
                            f"ray.num_workers ({cfg.ray.num_workers})")
        if not cfg.train.global_batch_size:
            raise UserError("config key 'ray.min_workers': elastic training needs train.global_batch_size, so "
                            "that a step keeps its size whatever the number of workers")
        if cfg.dataset.source != "parquet":
            raise UserError("config key 'ray.min_workers': elastic training reads with dataset.source=parquet "
                            "(a Ray Data epoch cannot be re-split between workers mid-epoch)")
        workers = (cfg.ray.min_workers, cfg.ray.num_workers)
    return ScalingConfig(num_workers=workers, use_gpu=cfg.ray.use_gpu,
                         resources_per_worker={"CPU": cfg.ray.cpus_per_worker})


def _submitted_job() -> bool:
    """True in the driver of a `ray job submit` job (Ray's job supervisor sets this)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def _check_paths(cfg: Config) -> None:
    """A submitted job runs in Ray's temporary copy of the working directory: a relative path
    would point inside it (and the results would vanish with it)."""
    if not _submitted_job():
        return  # `shardrec ray` on this machine: relative paths are made absolute here
    for key, value in (("dataset.path", cfg.dataset.path), ("run_dir (--run-dir)", cfg.run_dir),
                       ("ray.storage_path", cfg.ray.storage_path)):
        if value and not Path(value).is_absolute():
            raise UserError(f"config key '{key}' is the relative path '{value}': a `ray job submit` job runs in "
                            "Ray's temporary copy of the working directory; give an absolute path on storage "
                            "every node sees (e.g. /shared/...)")
    if not cfg.run_dir and not cfg.ray.storage_path:
        raise UserError("a `ray job submit` job needs --run-dir or ray.storage_path (an absolute folder every "
                        "node sees); otherwise its results would land in Ray's temporary folder")


def _preflight(cfg: Config, resources: dict) -> None:
    """Fail in one line when the cluster cannot give what the job asks for: Ray would wait
    for the resources forever, with no message."""
    workers = cfg.ray.min_workers or cfg.ray.num_workers
    need, have = workers * cfg.ray.cpus_per_worker, float(resources.get("CPU", 0))
    if need > have:
        raise UserError(f"{workers} workers x {cfg.ray.cpus_per_worker:g} CPUs (ray.cpus_per_worker) = {need:g} CPUs, "
                        f"but the Ray cluster has {have:g}: lower --num-workers or ray.cpus_per_worker")
    if cfg.ray.use_gpu and workers > resources.get("GPU", 0):
        raise UserError(f"{workers} workers with a GPU each, but the Ray cluster has {resources.get('GPU', 0):g} GPUs")
    if cfg.dataset.source == "ray_data" and have - need < 1:
        raise UserError(f"dataset.source=ray_data needs a free CPU for Ray Data's read tasks, but the workers take "
                        f"{need:g} of the cluster's {have:g} CPUs: set ray.cpus_per_worker lower (e.g. 0.5)")


def launch(cfg: Config) -> dict:
    """Train with `cfg.ray.num_workers` Ray Train workers; returns rank 0's summary.

    Fault tolerance: when a worker dies, Ray Train (FailureConfig, `ray.max_failures` times)
    restarts the worker group and every worker calls `run(cfg)` again; with
    `checkpoint.resume: auto` (the default here) they continue from the newest complete
    checkpoint in the run folder. That folder, on storage every node sees, is the source of
    truth: DCP writes each rank's shards there directly, and reporting the same folders to
    Ray with `ray.train.report(checkpoint=...)` would only copy them a second time.
    """
    import json

    import ray
    from ray.train import FailureConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from shardrec.trainer.distributed import process_group_backend
    from shardrec.trainer.run_dir import RunDir, default_run_dir

    _check_paths(cfg)
    cfg.dataset.path = str(Path(cfg.dataset.path).resolve())
    default = default_run_dir(cfg)
    if cfg.ray.storage_path:
        default = str(Path(cfg.ray.storage_path) / Path(default).name)
    cfg.run_dir = str(Path(cfg.run_dir or default).resolve())
    scaling = _scaling(cfg)
    if cfg.overwrite and cfg.checkpoint.resume in ("", "auto"):
        # Here, once: a restarted worker group must not wipe what the first attempt saved.
        folder = RunDir(cfg.run_dir, is_main=True)
        folder.open(fresh=True, overwrite=True)
        folder.close()
        cfg.overwrite = False
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=True)
    _preflight(cfg, ray.cluster_resources())
    datasets = {}
    if cfg.dataset.source == "ray_data":
        datasets["train"] = ray.data.read_parquet(str(Path(cfg.dataset.path) / cfg.dataset.train_split))
    trainer = TorchTrainer(
        _worker,
        train_loop_config=dataclasses.asdict(cfg),
        torch_config=TorchConfig(backend=process_group_backend(cfg.ray.use_gpu),
                                 timeout_s=int(cfg.train.pg_timeout_minutes * 60)),
        scaling_config=scaling,
        run_config=RunConfig(name=Path(cfg.run_dir).name, storage_path=str(Path(cfg.run_dir).parent / "ray"),
                             failure_config=FailureConfig(max_failures=cfg.ray.max_failures)),
        datasets=datasets,
    )
    trainer.fit()
    return json.loads((Path(cfg.run_dir) / "summary.json").read_text())
