"""Fixtures for the data_pipeline tests.

Two synthetic data sets are generated once per session (a one-hot `tiny` one and a
multi-hot `tiny-multihot` one, each with several files and row groups per split), and a
factory builds small hand-made "indexed" data sets whose dense column `idx` holds the
global row number, so tests can tell exactly which rows a reader returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature, write_schema
from shardrec.data_pipeline.synth import SynthSpec, generate, spec_from_preset

# 3000 rows -> train 2400 / valid 300 / test 300. With 1000 rows per file and 300 rows per
# row group, train has files of 1000, 1000, 400 rows and row groups
# [300, 300, 300, 100] [300, 300, 300, 100] [300, 100]: unbalanced between two ranks
# (rank 0 gets 1500 rows, rank 1 gets 900).
SYNTH_ROWS = 3000
ROWS_PER_FILE = 1000
ROW_GROUP_ROWS = 300


def small_spec(preset: str, seed: int = 1, rows: int = SYNTH_ROWS, **overrides) -> SynthSpec:
    spec = spec_from_preset(preset, rows, seed=seed)
    spec.rows_per_file, spec.row_group_rows = ROWS_PER_FILE, ROW_GROUP_ROWS
    for key, value in overrides.items():
        setattr(spec, key, value)
    return spec


@pytest.fixture(scope="session")
def make_spec():
    """make_spec(preset, seed=1, rows=3000, **field overrides) -> a small SynthSpec with
    1000 rows per file and 300 rows per row group."""
    return small_spec


@pytest.fixture(scope="session")
def onehot_ds(tmp_path_factory) -> tuple[Path, SynthSpec, DatasetSchema]:
    """`tiny` preset (all one-hot), default ctr 0.25."""
    spec = small_spec("tiny", seed=1)
    out = tmp_path_factory.mktemp("onehot") / "ds"
    schema = generate(spec, out)
    return out, spec, schema


@pytest.fixture(scope="session")
def multihot_ds(tmp_path_factory) -> tuple[Path, SynthSpec, DatasetSchema]:
    """`tiny-multihot` preset (6 multi-hot features with empty bags), ctr 0.1."""
    spec = small_spec("tiny-multihot", seed=2, ctr=0.1)
    out = tmp_path_factory.mktemp("multihot") / "ds"
    schema = generate(spec, out)
    return out, spec, schema


# ---------------------------------------------------------------------------------------
# Indexed data sets: every column is a known function of the row number.

INDEXED_SCHEMA = DatasetSchema(
    label="label",
    dense=["idx", "half"],
    sparse=[SparseFeature("s", 1000), SparseFeature("m", 1000, multi_hot=True)],
)


def m_list(i: int):
    """The multi-hot value of row i: None (null) for some rows, else i % 4 ids."""
    if i % 11 == 5:
        return None
    return [(i * 7 + j) % 1000 for j in range(i % 4)]


def indexed_table(start: int, n: int) -> pa.Table:
    idx = np.arange(start, start + n)
    return pa.table(
        {
            "label": pa.array((idx % 2).astype(np.float32)),
            "idx": pa.array(idx.astype(np.float32)),
            "half": pa.array((idx * 0.5).astype(np.float32)),
            "s": pa.array((idx % 1000).astype(np.int64)),
            "m": pa.array([m_list(int(i)) for i in idx], pa.list_(pa.int64())),
        },
        schema=INDEXED_SCHEMA.arrow_schema(),
    )


@dataclass
class Indexed:
    path: Path
    schema: DatasetSchema
    rows: int
    groups: list[tuple[int, int]]  # (first row, rows) of each row group, in split order


def write_indexed(root: Path, files: list[list[int]], split: str = "train") -> Indexed:
    """A data set whose split has one file per entry of `files`, holding row groups of the
    given sizes; rows are numbered 0..N-1 across files in name order."""
    (root / split).mkdir(parents=True)
    start, groups = 0, []
    for k, sizes in enumerate(files):
        path = root / split / f"part-{k:05d}.parquet"
        with pq.ParquetWriter(path, INDEXED_SCHEMA.arrow_schema()) as writer:
            for n in sizes:
                writer.write_table(indexed_table(start, n))
                groups.append((start, n))
                start += n
        assert pq.ParquetFile(path).metadata.num_row_groups == len(sizes)
    schema = DatasetSchema(label=INDEXED_SCHEMA.label, dense=list(INDEXED_SCHEMA.dense),
                           sparse=list(INDEXED_SCHEMA.sparse), splits={split: start})
    write_schema(root, schema)
    return Indexed(root, schema, start, groups)


@pytest.fixture
def indexed(tmp_path):
    """Factory: indexed(files=[[sizes of file 0's row groups], ...]) -> Indexed."""
    counter = iter(range(1000))

    def make(files: list[list[int]], split: str = "train") -> Indexed:
        return write_indexed(tmp_path / f"indexed{next(counter)}", files, split)

    return make


def batch_idx(batch) -> np.ndarray:
    """Row numbers of an indexed batch, after checking every column matches the row."""
    idx = batch.dense_features[:, 0].numpy().astype(np.int64)
    np.testing.assert_array_equal(batch.dense_features[:, 1].numpy(), (idx * 0.5).astype(np.float32))
    np.testing.assert_array_equal(batch.labels.numpy(), (idx % 2).astype(np.float32))
    feats = batch.sparse_features.to_dict()
    np.testing.assert_array_equal(feats["s"].values().numpy(), idx % 1000)
    np.testing.assert_array_equal(feats["s"].lengths().numpy(), np.ones(len(idx)))
    bags = [m_list(int(i)) or [] for i in idx]
    np.testing.assert_array_equal(feats["m"].lengths().numpy(), [len(b) for b in bags])
    np.testing.assert_array_equal(feats["m"].values().numpy(),
                                  np.array([v for b in bags for v in b], dtype=np.int64))
    return idx


@pytest.fixture
def rows_of():
    """rows_of(batch) -> np.ndarray of the row numbers in an indexed batch (checked)."""
    return batch_idx
