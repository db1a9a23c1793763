"""The synthetic generator: determinism, schema.json contents, value ranges, atomic output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import shardrec.data_pipeline.synth as synth
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.schema import load_schema
from shardrec.data_pipeline.synth import SPLITS, generate


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*.parquet"))


def _as_json(schema) -> dict:
    """The schema as schema.json holds it (tuples in `source` become lists)."""
    return json.loads(json.dumps(schema.to_json()))


def _split_table(root: Path, split: str) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted((root / split).glob("*.parquet")))


def test_same_spec_and_seed_give_identical_output(onehot_ds, make_spec, tmp_path):
    root, spec, _ = onehot_ds
    again = tmp_path / "again"
    generate(make_spec("tiny", seed=spec.seed), again)

    assert _files(again) == _files(root)
    assert len(_files(root)) > 3  # several files per split, not a trivial comparison
    for rel in _files(root):
        a, b = pq.read_table(root / rel), pq.read_table(again / rel)
        assert a.schema == b.schema
        assert a.equals(b), rel
        meta_a, meta_b = pq.ParquetFile(root / rel).metadata, pq.ParquetFile(again / rel).metadata
        assert [meta_a.row_group(i).num_rows for i in range(meta_a.num_row_groups)] == \
               [meta_b.row_group(i).num_rows for i in range(meta_b.num_row_groups)]
    a_json = json.loads((root / "schema.json").read_text())
    b_json = json.loads((again / "schema.json").read_text())
    assert a_json == b_json
    assert set(a_json["teacher_auc"]) == {"valid", "test"}


def test_different_seed_gives_different_data(onehot_ds, make_spec, tmp_path):
    root, spec, schema = onehot_ds
    other = tmp_path / "other"
    other_schema = generate(make_spec("tiny", seed=spec.seed + 1), other)

    assert other_schema.splits == schema.splits  # same shape ...
    for split in SPLITS:
        a, b = _split_table(root, split), _split_table(other, split)
        assert a.schema == b.schema and a.num_rows == b.num_rows
        assert not a.equals(b)
        # ... but different values in every kind of column, not just one
        assert not a.column("I1").equals(b.column("I1"))
        assert not a.column("C1").equals(b.column("C1"))
        assert not a.column("label").equals(b.column("label"))
    assert other_schema.teacher_auc != schema.teacher_auc


@pytest.mark.parametrize("ds", ["onehot_ds", "multihot_ds"])
def test_schema_json_matches_files(ds, request):
    root, spec, returned = request.getfixturevalue(ds)
    schema = load_schema(root)
    assert _as_json(schema) == _as_json(returned) == json.loads((root / "schema.json").read_text())
    assert schema.splits == {"train": 2400, "valid": 300, "test": 300}
    assert sum(schema.splits.values()) == spec.rows == 3000
    for split in SPLITS:
        files = sorted((root / split).glob("*.parquet"))
        metas = [pq.ParquetFile(p).metadata for p in files]
        assert sum(m.num_rows for m in metas) == schema.splits[split]
        assert all(m.num_rows <= spec.rows_per_file for m in metas)
        assert all(m.row_group(i).num_rows <= spec.row_group_rows for m in metas for i in range(m.num_row_groups))
        for p in files:
            assert pq.read_schema(p) == schema.arrow_schema()
    assert len(list((root / "train").glob("*.parquet"))) == 3
    assert set(schema.teacher_auc) == {"valid", "test"}
    for split, auc in schema.teacher_auc.items():
        assert 0.5 < auc < 1.0, (split, auc)
    assert schema.source["seed"] == spec.seed and schema.source["rows"] == spec.rows


def test_teacher_auc_is_the_auc_of_its_labels(onehot_ds):
    """teacher_auc must be computed against the labels actually written, i.e. it must
    exceed 0.5 clearly; random scores would give ~0.5 and a label mismatch far less."""
    root, _, schema = onehot_ds
    for split in ("valid", "test"):
        labels = _split_table(root, split).column("label").to_numpy()
        assert 0 < labels.sum() < len(labels)  # AUC is defined
        assert schema.teacher_auc[split] > 0.6


def test_files_do_not_repeat_rows(onehot_ds):
    """Each file has its own random stream: rows are not copied between files or splits."""
    root, _, _ = onehot_ds
    tables = [_split_table(root, s) for s in SPLITS]
    dense = np.concatenate([np.stack([t.column(f"I{j}").to_numpy() for j in range(1, 14)], axis=1)
                            for t in tables])
    assert len(np.unique(dense, axis=0)) > 0.99 * len(dense)


@pytest.mark.parametrize("ds", ["onehot_ds", "multihot_ds"])
def test_label_mean_close_to_ctr(ds, request):
    root, spec, schema = request.getfixturevalue(ds)
    labels = np.concatenate([_split_table(root, s).column("label").to_numpy() for s in SPLITS])
    assert set(np.unique(labels)) <= {0.0, 1.0}
    # 3000 Bernoulli(ctr) draws: std of the mean <= 0.008; calibration adds a little
    assert abs(labels.mean() - spec.ctr) < 0.04, (labels.mean(), spec.ctr)


@pytest.mark.parametrize("ds", ["onehot_ds", "multihot_ds"])
def test_sparse_ids_in_range_and_types(ds, request):
    root, spec, schema = request.getfixturevalue(ds)
    for split in SPLITS:
        table = _split_table(root, split)
        for f, max_ids in zip(schema.sparse, spec.max_ids):
            col = table.column(f.name)
            if f.multi_hot:
                assert pa.types.is_list(col.type)
                lengths = pc.list_value_length(col).to_numpy()
                assert lengths.max() <= max_ids
                values = pc.list_flatten(col).to_numpy()
            else:
                assert col.type == pa.int64()
                assert col.null_count == 0
                values = col.to_numpy()
            assert values.min() >= 0 and values.max() < f.num_embeddings, f.name
    if ds == "multihot_ds":
        multi = [f for f in schema.sparse if f.multi_hot]
        assert len(multi) == 6
        train = _split_table(root, "train")
        lengths = np.concatenate([pc.list_value_length(train.column(f.name)).to_numpy() for f in multi])
        assert (lengths == 0).any() and (lengths > 1).any()  # empty bags and real bags


def test_existing_output_folder_is_refused(make_spec, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError) as err:
        generate(make_spec("tiny"), out)
    assert str(out) in str(err.value)
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]


@pytest.fixture
def fast_calibration(monkeypatch):
    """Atomicity tests do not need a precise teacher bias."""
    monkeypatch.setattr(synth, "CALIBRATION_ROWS", 2000)


def test_success_leaves_no_temporary_folder(make_spec, tmp_path, fast_calibration):
    out = tmp_path / "out"
    generate(make_spec("tiny", rows=300), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "schema.json").is_file()


def test_overwrite_replaces_existing_data_set_only(make_spec, tmp_path, fast_calibration):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with pytest.raises(UserError, match="neither empty nor a shardrec data set"):
        generate(make_spec("tiny", rows=300), out, overwrite=True)
    assert (out / "stale.txt").read_text() == "old"
    (out / "schema.json").write_text("{}")  # a data set (even a broken one) may be replaced
    schema = generate(make_spec("tiny", rows=300), out, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert _as_json(load_schema(out)) == _as_json(schema)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _fail_after_first_write(monkeypatch):
    real = synth.pq.write_table
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) > 1:
            raise RuntimeError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(synth.pq, "write_table", flaky)
    return calls


def test_failure_leaves_no_output_and_no_leftovers(make_spec, tmp_path, monkeypatch, fast_calibration):
    calls = _fail_after_first_write(monkeypatch)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated"):
        generate(make_spec("tiny", rows=3000), out)
    assert len(calls) == 2  # one file was really written before the failure
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_data_set(make_spec, tmp_path, monkeypatch, fast_calibration):
    out = tmp_path / "out"
    old = generate(make_spec("tiny", rows=300), out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _fail_after_first_write(monkeypatch)
    with pytest.raises(RuntimeError, match="simulated"):
        generate(make_spec("tiny", rows=3000, seed=5), out, overwrite=True)
    assert _as_json(load_schema(out)) == _as_json(old)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_bad_spec_is_a_user_error(make_spec, tmp_path):
    with pytest.raises(UserError, match="rows"):
        generate(make_spec("tiny", rows=2), tmp_path / "a")
    spec = make_spec("tiny")
    spec.max_ids = spec.max_ids[:-1]
    with pytest.raises(UserError, match="max_ids"):
        generate(spec, tmp_path / "b")
    with pytest.raises(UserError, match="unknown synth preset"):
        synth.spec_from_preset("nope", 100)
    assert list(tmp_path.iterdir()) == []


def test_progress_reports_every_split(make_spec, tmp_path, fast_calibration):
    calls = []
    schema = generate(make_spec("tiny", rows=3000), tmp_path / "out",
                      progress=lambda split, done, total: calls.append((split, done, total)))
    for split in SPLITS:
        mine = [c for c in calls if c[0] == split]
        assert mine[-1] == (split, schema.splits[split], schema.splits[split])
        assert [d for _, d, _ in mine] == sorted(d for _, d, _ in mine)
    assert [c[1] for c in calls if c[0] == "train"] == [1000, 2000, 2400]


def test_minimum_rows_give_every_split_a_row(make_spec, tmp_path, fast_calibration):
    out = tmp_path / "out"
    schema = generate(make_spec("tiny", rows=3), out)
    for split in SPLITS:
        assert schema.splits[split] >= 1, schema.splits
        assert list((out / split).glob("*.parquet"))


def test_max_table_size_and_multi_hot_override_every_preset():
    from shardrec.data_pipeline.synth import PRESETS, spec_from_preset

    for preset in PRESETS:
        spec = spec_from_preset(preset, 100, max_table_size=50, multi_hot=3)
        assert max(spec.table_sizes) == 50 and spec.max_ids[-1] == 3, preset
