"""DIN and BST read the order and content of a behaviour history (sequence feature).

Synthetic clicks: 400 items in 8 groups of 50; a row's history is 3-12 earlier items, all
but one or two from one group (the user's current taste); the label is 1 when the target
item belongs to that group (with 10% label noise). Only a model that compares the target
with the history can beat a coin flip. With the histories shuffled across rows the same
model must fall back to chance: proof that the signal comes through the sequence, not from
a leak in another column.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from shardrec.configs.loader import load_config
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature, write_schema
from shardrec.trainer.loop import run

ITEMS, GROUPS, MAX_LEN = 400, 8, 12


def _rows(rng: np.random.Generator, n: int, shuffle: bool) -> pa.Table:
    taste = rng.integers(0, GROUPS, n)
    lengths = rng.integers(3, MAX_LEN + 1, n)
    hist = []
    for t, k in zip(taste, lengths):
        h = t * 50 + rng.integers(0, 50, k)
        noise = rng.random(k) < 0.1
        h[noise] = rng.integers(0, ITEMS, noise.sum())
        hist.append(h.tolist())
    positive = rng.random(n) < 0.5
    group = np.where(positive, taste, (taste + rng.integers(1, GROUPS, n)) % GROUPS)
    item = group * 50 + rng.integers(0, 50, n)
    label = positive ^ (rng.random(n) < 0.1)
    if shuffle:
        hist = [hist[i] for i in rng.permutation(n)]
    return pa.table({"label": pa.array(label.astype(np.float32)), "item_id": pa.array(item, pa.int64()),
                     "user_id": pa.array(rng.integers(0, 50, n), pa.int64()),
                     "hist_item_id": pa.array(hist, pa.list_(pa.int64()))})


def _dataset(root, shuffle: bool) -> str:
    rng = np.random.default_rng(0)
    sizes = {"train": 16000, "valid": 2000, "test": 2000}
    for split, n in sizes.items():
        (root / split).mkdir(parents=True)
        pq.write_table(_rows(rng, n, shuffle), root / split / "part-00000.parquet", row_group_size=4096)
    write_schema(root, DatasetSchema(label="label", dense=[], splits=sizes, sparse=[
        SparseFeature("item_id", ITEMS), SparseFeature("user_id", 50),
        SparseFeature("hist_item_id", ITEMS, multi_hot=True, sequence_of="item_id", max_length=MAX_LEN)]))
    return str(root)


@pytest.fixture(scope="module")
def histories(tmp_path_factory) -> dict[str, str]:
    return {kind: _dataset(tmp_path_factory.mktemp(kind), kind == "shuffled") for kind in ("real", "shuffled")}


def _auc(model: str, data: str, run_dir) -> float:
    cfg = load_config("din_movielens", [f"--model.name={model}", f"--dataset.path={data}", f"--run_dir={run_dir}",
                                        "--train.epochs=6", "--train.batch_size=256", "--train.progress=false",
                                        "--model.flavor=small", "--embeddings.weight_decay=0"])
    return run(cfg)["auc"]


@pytest.mark.parametrize("model", ["din", "bst"])
def test_history_models_use_the_sequence(histories, tmp_path, model):
    torch.manual_seed(0)
    real = _auc(model, histories["real"], tmp_path / "real")
    shuffled = _auc(model, histories["shuffled"], tmp_path / "shuffled")
    assert real > 0.8, real
    assert shuffled < 0.6, shuffled
