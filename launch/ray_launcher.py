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

from configs.loader import build
from configs.tree import Config


def _worker(config: dict) -> None:
    import ray.train

    from launch.cli import _quiet
    from trainer.loop import run

    _quiet()
    summary = run(build(Config, config, prefix=""))
    # Every worker reports (Ray Train expects all to); only numbers go into Ray's metrics.
    ray.train.report({k: v for k, v in summary.items() if isinstance(v, (int, float))})


def launch(cfg: Config) -> dict:
    """Train with `cfg.ray.num_workers` Ray Train workers; returns rank 0's summary."""
    import json

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from trainer.run_dir import default_run_dir

    cfg.dataset.path = str(Path(cfg.dataset.path).resolve())
    cfg.run_dir = str(Path(cfg.run_dir or default_run_dir(cfg)).resolve())
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=True)
    datasets = {}
    if cfg.dataset.source == "ray_data":
        datasets["train"] = ray.data.read_parquet(str(Path(cfg.dataset.path) / cfg.dataset.train_split))
    trainer = TorchTrainer(
        _worker,
        train_loop_config=dataclasses.asdict(cfg),
        torch_config=TorchConfig(backend="nccl" if cfg.ray.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                     resources_per_worker={"CPU": cfg.ray.cpus_per_worker}),
        run_config=RunConfig(name=Path(cfg.run_dir).name, storage_path=str(Path(cfg.run_dir).parent / "ray")),
        datasets=datasets,
    )
    trainer.fit()
    return json.loads((Path(cfg.run_dir) / "summary.json").read_text())
