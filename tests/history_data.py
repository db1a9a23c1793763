"""A synthetic click data set whose label depends on a behaviour history (sequence feature).

400 items in 8 groups of 50; a row's history is 3-12 earlier items, nearly all from one group
(the user's current taste); the label is 1 when the target item belongs to that group (10%
label noise). With `shuffle`, histories are permuted across rows: the signal is gone. With
`item_bias`, even items are also clicked 90% of the time (a signal learned in a few steps).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature, write_schema

ITEMS, GROUPS, MAX_LEN = 400, 8, 12


def _rows(rng: np.random.Generator, n: int, shuffle: bool, item_bias: bool) -> pa.Table:
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
    if item_bias:  # also an easy signal: even items are clicked far more often
        label = np.where(item % 2 == 0, rng.random(n) < 0.9, label)
    if shuffle:
        hist = [hist[i] for i in rng.permutation(n)]
    return pa.table({"label": pa.array(label.astype(np.float32)), "item_id": pa.array(item, pa.int64()),
                     "user_id": pa.array(rng.integers(0, 50, n), pa.int64()),
                     "hist_item_id": pa.array(hist, pa.list_(pa.int64()))})


def history_dataset(root, shuffle: bool = False, sizes: dict | None = None, item_bias: bool = False) -> str:
    rng = np.random.default_rng(0)
    sizes = sizes or {"train": 16000, "valid": 2000, "test": 2000}
    for split, n in sizes.items():
        (root / split).mkdir(parents=True)
        pq.write_table(_rows(rng, n, shuffle, item_bias), root / split / "part-00000.parquet", row_group_size=4096)
    write_schema(root, DatasetSchema(label="label", dense=[], splits=sizes, sparse=[
        SparseFeature("item_id", ITEMS), SparseFeature("user_id", 50),
        SparseFeature("hist_item_id", ITEMS, multi_hot=True, sequence_of="item_id", max_length=MAX_LEN)]))
    return str(root)


