"""Worker for the elastic-resume tests (spawned by torch.multiprocessing, gloo on 127.0.0.1).

Each process joins a world of `world_size` through the same env:// path torchrun uses, runs
`trainer.loop.run(cfg)`, and records which training rows its reader handed out, batch by
batch, as one fingerprint per row (the bytes of its dense features: unique per row of the
synthetic data sets), so the test can check every row of the epoch was trained on once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def row_keys(dense: np.ndarray) -> list[str]:
    """One key per row of a (B, D) float32 matrix."""
    return [row.tobytes().hex() for row in np.ascontiguousarray(dense, dtype=np.float32)]


def worker(rank: int, world_size: int, port: int, overrides: list[str], record: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0",
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from shardrec.configs.loader import load_config
    from shardrec.data_pipeline.reader import ShardReader
    from shardrec.trainer.loop import run

    batches: list[tuple[int, list[str]]] = []  # (epoch, row keys) per batch
    real_iter = ShardReader.__iter__

    def recording_iter(self):
        for batch in real_iter(self):
            if self.drop_last:  # the training reader (evaluation readers keep every row)
                batches.append((self.epoch, row_keys(batch.dense_features.numpy())))
            yield batch

    ShardReader.__iter__ = recording_iter
    summary = run(load_config("tiny", overrides))
    # The pipeline reads ahead: the batches trained on are the first ones this session ran.
    resumed_at = _resumed_step(Path(summary["run_dir"]))
    trained = batches[: summary["steps"] - resumed_at]
    Path(f"{record}.rank{rank}.json").write_text(json.dumps({"summary": summary, "batches": trained}))


def _resumed_step(run_dir: Path) -> int:
    step = 0
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "resume":
            step = record["step"]
    return step
