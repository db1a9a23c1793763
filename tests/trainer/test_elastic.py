"""Resume at another world size: a job checkpointed at W ranks continues at W' ranks, trains
on every row of the epoch exactly once, and ends as good as an uninterrupted run."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch.multiprocessing as mp
from elastic_worker import row_keys, worker
from shardrec.data_pipeline.schema import load_schema, split_files

GLOBAL_BATCH = 512


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Two epochs of 46 global batches; the learning rate decays to 0 over the second, as in
# MLPerf's DLRM schedule, so the run converges and its AUC can be compared closely.
SCHEDULE = ["--train.epochs=2", "--optimizer.decay_start_step=46", "--optimizer.decay_steps=46"]
STOP = 60  # 14 batches into the second epoch


def _leg(world_size: int, data: str, run_dir: Path, record: Path, *extra: str) -> dict:
    overrides = [f"--dataset.path={data}", f"--run_dir={run_dir}", f"--train.global_batch_size={GLOBAL_BATCH}",
                 "--train.num_threads=1", "--train.log_every=5", *SCHEDULE, *extra]
    mp.spawn(worker, args=(world_size, _port(), overrides, str(record)), nprocs=world_size, join=True)
    ranks = [json.loads(Path(f"{record}.rank{r}.json").read_text()) for r in range(world_size)]
    return {"summary": ranks[0]["summary"], "batches": [b for r in ranks for b in r["batches"]]}


def _train_rows(data: str) -> list[str]:
    schema = load_schema(data)
    keys = []
    for path in split_files(data, "train"):
        table = pq.read_table(path, columns=schema.dense)
        keys += row_keys(np.stack([table.column(c).to_numpy() for c in schema.dense], axis=1))
    return keys


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("elastic")
    return {w: _leg(w, tiny_data, tmp / f"full{w}", tmp / f"full{w}")["summary"] for w in (1, 2)}


@pytest.mark.slow
@pytest.mark.parametrize("first, second", [(2, 1), (1, 2)])
def test_resume_at_another_world_size_trains_every_row_once(tiny_data, tmp_path, uninterrupted, first, second):
    rows = _train_rows(tiny_data)
    assert len(set(rows)) == len(rows)  # the fingerprint identifies a row
    run_dir = tmp_path / "run"
    one = _leg(first, tiny_data, run_dir, tmp_path / "leg1", f"--train.max_steps={STOP}")
    assert one["summary"]["steps"] == STOP and one["summary"]["world_size"] == first
    two = _leg(second, tiny_data, run_dir, tmp_path / "leg2", "--checkpoint.resume=latest")
    assert two["summary"]["world_size"] == second
    assert all(len(keys) == GLOBAL_BATCH // first for _, keys in one["batches"])
    assert all(len(keys) == GLOBAL_BATCH // second for _, keys in two["batches"])

    per_epoch = 46 * GLOBAL_BATCH
    for epoch in (0, 1):
        seen = Counter(k for e, keys in one["batches"] + two["batches"] if e == epoch for k in keys)
        assert max(seen.values()) == 1, f"a row was trained on twice in epoch {epoch}"
        assert set(seen) <= set(rows)
        # Left out: the drop_last remainder of the epoch, under one global batch.
        assert len(rows) - GLOBAL_BATCH < len(seen) <= per_epoch, (epoch, len(seen))
    # Every step of the second leg is one global batch of the resumed epoch.
    assert two["summary"]["steps"] == STOP + len(two["batches"]) // second
    reference = uninterrupted[first]
    assert reference["steps"] == 92 and reference["auc"] > 0.65  # trained, not at AUC 0.5
    print(f"elastic {first}->{second}: AUC {two['summary']['auc']:.5f}, uninterrupted {reference['auc']:.5f}")
    assert abs(two["summary"]["auc"] - reference["auc"]) <= 0.002, (two["summary"]["auc"], reference["auc"])
    resume = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if '"resume"' in line]
    assert resume[-1]["from_world_size"] == first and resume[-1]["step"] == STOP
