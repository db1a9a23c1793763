"""Fuzz: seeded random corruptions of a small data set (32, or SHARDREC_FUZZ_CASES), each
trained on through the CLI.

Every run must either stop with a UserError (exit code 2) whose message names a file of the
data set, or, when the corrupted data set is still valid (an independent check below says
so), train to the end with exit code 0. Never exit 0 on data that is not valid.

The data set is sized so that a run reads every row of every split: 2,048 training rows in
4 files of 2 row groups, batch 256 (8 steps, no drop_last remainder), validation every 4
steps, and the whole test split at the end.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corruption import (
    cast_column,
    copy_dataset,
    drop_column,
    flip_bytes,
    set_value,
    split_files,
    truncate,
)
from shardrec.data_pipeline.schema import load_schema
from shardrec.data_pipeline.synth import generate, spec_from_preset
from shardrec.launch.cli import main

# Every kind once, then seeded random kinds: 32 in `make test`; `make test-long` runs 200.
CASES = int(os.environ.get("SHARDREC_FUZZ_CASES", "32"))
KINDS = ["id_high", "id_negative", "id_null", "dense_nan", "dense_inf", "dense_null", "label_bad",
         "wrong_type", "drop_column", "truncate", "flip_bytes", "schema_shrink", "schema_grow",
         "schema_rename", "schema_garbage", "valid_edit"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    spec = spec_from_preset("tiny", 2560, seed=11)
    spec.rows_per_file, spec.row_group_rows = 512, 256
    out = tmp_path_factory.mktemp("fuzz") / "base"
    generate(spec, out)
    return out


def is_valid(ds: Path) -> bool:
    """Independent of shardrec's reader: plain pyarrow reads and numpy checks of every value."""
    try:
        schema = load_schema(ds)
        for split in ("train", "valid", "test"):
            for path in split_files(ds, split):
                table = pq.read_table(path, page_checksum_verification=True)
                for field in schema.arrow_schema():
                    got = table.schema.field(field.name).type  # KeyError: a missing column
                    if got != field.type:
                        return False
                labels = table.column(schema.label)
                y = labels.to_numpy(zero_copy_only=False)
                if labels.null_count or not np.all((y >= 0) & (y <= 1)):
                    return False
                for name in schema.dense:
                    col = table.column(name)
                    if col.null_count or not np.isfinite(col.to_numpy(zero_copy_only=False)).all():
                        return False
                for f in schema.sparse:
                    ids = table.column(f.name)
                    if ids.null_count:
                        return False
                    v = ids.to_numpy()
                    if len(v) and (v.min() < 0 or v.max() >= f.num_embeddings):
                        return False
    except Exception:  # noqa: BLE001 - anything unreadable is not valid
        return False
    return True


def corrupt(ds: Path, kind: str, rng: np.random.Generator) -> Path:
    """Apply one corruption; returns the file it touched."""
    files = [p for split in ("train", "valid", "test") for p in split_files(ds, split)]
    path = files[rng.integers(len(files))]
    schema_file = ds / "schema.json"
    schema = json.loads(schema_file.read_text())
    sparse = schema["sparse"][rng.integers(len(schema["sparse"]))]
    dense = schema["dense"][rng.integers(len(schema["dense"]))]
    rows = pq.ParquetFile(path).metadata.num_rows
    row = int(rng.integers(rows))
    if kind == "id_high":
        set_value(path, sparse["name"], row, sparse["num_embeddings"] + int(rng.integers(0, 1000)))
    elif kind == "id_negative":
        set_value(path, sparse["name"], row, -int(rng.integers(1, 1000)))
    elif kind == "id_null":
        set_value(path, sparse["name"], row, None)
    elif kind in ("dense_nan", "dense_inf", "dense_null"):
        value = {"dense_nan": math.nan, "dense_inf": -math.inf, "dense_null": None}[kind]
        set_value(path, dense, row, value)
    elif kind == "label_bad":
        set_value(path, schema["label"], row, [2.0, -1.0, math.nan][rng.integers(3)])
    elif kind == "wrong_type":
        column, type_ = [(sparse["name"], pa.float64()), (dense, pa.float64()), (sparse["name"], pa.int32())][rng.integers(3)]
        cast_column(path, column, type_)
    elif kind == "drop_column":
        drop_column(path, [sparse["name"], dense, schema["label"]][rng.integers(3)])
    elif kind == "truncate":
        truncate(path, float(rng.uniform(0.05, 0.98)))
    elif kind == "flip_bytes":
        flip_bytes(path, rng, count=int(rng.integers(1, 16)))
    elif kind == "valid_edit":
        set_value(path, sparse["name"], row, int(rng.integers(sparse["num_embeddings"])))
    else:
        path = schema_file
        if kind == "schema_shrink":  # valid only while every id still fits
            sparse["num_embeddings"] = max(1, int(sparse["num_embeddings"] * rng.uniform(0.01, 0.999)))
        elif kind == "schema_grow":
            sparse["num_embeddings"] += int(rng.integers(1, 100))
        elif kind == "schema_rename":
            sparse["name"] += "_renamed"
        text = json.dumps(schema)
        if kind == "schema_garbage":
            text = text[: int(len(text) * rng.uniform(0.1, 0.9))]
        schema_file.write_text(text)
    return path


@pytest.mark.slow
def test_corrupted_data_sets_stop_with_a_named_file_or_train_on_valid_data(base, tmp_path, capsys):
    outcomes = {"refused": 0, "trained": 0}
    for case in range(CASES):
        rng = np.random.default_rng([2026, case])
        kind = KINDS[case % len(KINDS)] if case < len(KINDS) else KINDS[rng.integers(len(KINDS))]
        ds = copy_dataset(base, tmp_path / f"ds{case}")
        touched = corrupt(ds, kind, rng)
        valid = is_valid(ds)
        capsys.readouterr()
        rc = main(["train", "--config", "tiny", f"--dataset.path={ds}", "--run-dir", str(tmp_path / f"run{case}"),
                   "--eval.batch_size=256", "--eval.every_steps=4", "--checkpoint.save_final=false",
                   "--train.log_every=8"])
        err = capsys.readouterr().err
        what = f"case {case} ({kind} of {touched}): exit {rc}, data valid: {valid}, stderr: {err[-500:]}"
        if valid:
            assert rc == 0, what
            summary = json.loads((tmp_path / f"run{case}" / "summary.json").read_text())
            assert summary["steps"] == 8, what
            outcomes["trained"] += 1
        else:
            assert rc == 2, what
            assert str(ds) in err, what  # names a file of the data set (or its schema.json)
            if touched.suffix == ".parquet":
                assert str(touched) in err, what
            outcomes["refused"] += 1
    print(outcomes)
    # Both outcomes happen, so neither branch is vacuous.
    assert outcomes["refused"] >= CASES // 2 and outcomes["trained"] >= 2, outcomes
