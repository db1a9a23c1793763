"""Metrics over 2 gloo ranks equal the metrics of the union of their rows.

Two spawned processes (FileStore rendezvous) each score their own rows, with deliberately
different sizes, label rates and score distributions, then `compute()` all-reduces. What is
compared: the streaming (binned) AUC against the exact Mann-Whitney AUC of the union, to
1e-6 (and to 1e-12 for scores on a grid, where binning loses nothing); logloss, NE,
calibration, accuracy and MSE against their formulas in numpy over the union.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# rank -> (rows, label rate, separation, offset): a mean of per-rank AUCs would be wrong here.
RANKS = {0: (6000, 0.04, 2.0, -3.0), 1: (3500, 0.45, 1.0, 0.5)}


def rank_data(rank: int) -> tuple[np.ndarray, np.ndarray]:
    n, rate, sep, offset = RANKS[rank]
    g = np.random.default_rng(100 + rank)
    y = (g.random(n) < rate).astype(np.float32)
    return (g.normal(size=n) + sep * y + offset).astype(np.float32), y


def gridded(x: np.ndarray) -> np.ndarray:
    return (np.round(x * 16) / 16).astype(np.float32)


def worker(rank: int, world_size: int, store: str, out: str) -> None:
    from shardrec.trainer.metrics import ClickMetrics

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    logits, labels = rank_data(rank)
    results = {}
    for name, scores in (("continuous", logits), ("gridded", gridded(logits))):
        m = ClickMetrics(torch.device("cpu"))
        b = 1024 + 512 * rank  # unequal batch sizes and counts per rank
        for i in range(0, len(labels), b):
            m.update(torch.from_numpy(scores[i:i + b]), torch.from_numpy(labels[i:i + b]))
        results[name] = m.compute()
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


def exact_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    pos = labels == 1
    p, n = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - p * (p + 1) / 2.0) / (p * n))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics_dist")
    out = tmp / "out.json"
    mp.spawn(worker, args=(2, str(tmp / "store"), str(out)), nprocs=2, join=True)
    return json.loads(out.read_text())


def union() -> tuple[np.ndarray, np.ndarray]:
    parts = [rank_data(r) for r in RANKS]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def test_distributed_auc_equals_exact_auc_of_the_union(two_ranks):
    logits, labels = union()
    exact = exact_auc(logits.astype(np.float64), labels)
    got = two_ranks["continuous"]
    assert abs(got["auc"] - exact) < 1e-6
    assert abs(got["auc"] - exact) <= got["auc_error_bound"]
    # On a grid, binning loses nothing: the streaming AUC is the exact one.
    assert two_ranks["gridded"]["auc"] == pytest.approx(exact_auc(gridded(logits), labels), abs=1e-12)
    # The test means something: averaging the per-rank AUCs would be far off.
    per_rank = [exact_auc(*rank_data(r)) for r in RANKS]
    assert abs(np.mean(per_rank) - exact) > 0.01


def test_distributed_ne_calibration_and_the_rest_match_their_formulas(two_ranks):
    logits, labels = union()
    x, y = logits.astype(np.float64), labels.astype(np.float64)
    p = 1 / (1 + np.exp(-x))
    logloss = np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    rate = y.mean()
    ne = logloss / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    got = two_ranks["continuous"]
    assert got["rows"] == sum(n for n, *_ in RANKS.values())
    assert got["label_rate"] == pytest.approx(rate, rel=1e-12)
    assert got["logloss"] == pytest.approx(logloss, rel=1e-9)
    assert got["ne"] == pytest.approx(ne, rel=1e-9)
    assert got["calibration"] == pytest.approx(p.mean() / rate, rel=1e-9)
    assert got["accuracy"] == pytest.approx(np.mean((p > 0.5) == (y == 1)), rel=1e-12)
    assert got["mse"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-9)
    assert got["rmse"] == pytest.approx(math.sqrt(got["mse"]))
