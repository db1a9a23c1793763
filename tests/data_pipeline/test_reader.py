"""ShardReader: round trip against pyarrow, rank split, drop_last, shuffle, resume."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.reader import RowGroup, ShardReader, assign_row_groups, list_row_groups
from shardrec.data_pipeline.schema import load_schema, split_files

BATCH = 128  # does not divide 2400 and straddles the 300-row groups and 1000-row files


def _split_table(root, split) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted((root / split).glob("*.parquet")))


# ---------------------------------------------------------------------------------------
# Round trip on generated data


@pytest.mark.parametrize("ds", ["onehot_ds", "multihot_ds"])
@pytest.mark.parametrize("split", ["train", "valid"])
def test_round_trip_matches_pyarrow(ds, split, request):
    root, _, _ = request.getfixturevalue(ds)
    schema = load_schema(root)
    expected = _split_table(root, split)
    n = expected.num_rows
    batch_size = BATCH if split == "train" else 70  # valid: 300 rows in one file, one group
    reader = ShardReader(root, split, schema, batch_size, drop_last=False)
    batches = list(reader)

    assert len(batches) == len(reader) == -(-n // batch_size)
    assert n % batch_size != 0
    sizes = [len(b.labels) for b in batches]
    assert sizes == [batch_size] * (len(batches) - 1) + [n - batch_size * (len(batches) - 1)]
    if split == "train":
        # some batch straddles a row-group boundary and some a file boundary
        bounds = np.cumsum(sizes)
        assert any(s < 300 < e for s, e in zip(bounds - sizes, bounds))
        assert any(s < 1000 < e for s, e in zip(bounds - sizes, bounds))

    dense = np.concatenate([b.dense_features.numpy() for b in batches])
    expected_dense = np.stack([expected.column(c).to_numpy() for c in schema.dense], axis=1)
    np.testing.assert_array_equal(dense, expected_dense)
    np.testing.assert_array_equal(np.concatenate([b.labels.numpy() for b in batches]),
                                  expected.column(schema.label).to_numpy())

    saw_empty = False
    start = 0
    for batch in batches:
        rows = expected.slice(start, len(batch.labels))
        start += len(batch.labels)
        kjt = batch.sparse_features
        assert kjt.keys() == schema.sparse_names
        feats = kjt.to_dict()
        all_lengths = []
        for f in schema.sparse:
            col = rows.column(f.name)
            jt = feats[f.name]
            if f.multi_hot:
                want_lengths = pc.list_value_length(col).to_numpy()
                want_values = pc.list_flatten(col).to_numpy()
                saw_empty |= bool((want_lengths == 0).any())
            else:
                want_lengths = np.ones(rows.num_rows, dtype=np.int64)
                want_values = col.to_numpy()
            np.testing.assert_array_equal(jt.lengths().numpy(), want_lengths, err_msg=f.name)
            np.testing.assert_array_equal(jt.values().numpy(), want_values, err_msg=f.name)
            np.testing.assert_array_equal(jt.offsets().numpy(),
                                          np.concatenate([[0], np.cumsum(want_lengths)]), err_msg=f.name)
            all_lengths.append(want_lengths)
        np.testing.assert_array_equal(kjt.lengths().numpy(), np.concatenate(all_lengths))
        assert kjt.values().shape[0] == sum(int(x.sum()) for x in all_lengths)
    assert start == n
    if ds == "multihot_ds":
        assert saw_empty


def test_row_groups_listed_in_file_order(onehot_ds):
    root, spec, schema = onehot_ds
    groups = list_row_groups(split_files(root, "train"), schema)
    assert [g.rows for g in groups] == [300, 300, 300, 100, 300, 300, 300, 100, 300, 100]
    assert [(g.file.name, g.index) for g in groups][:5] == [
        ("part-00000.parquet", 0), ("part-00000.parquet", 1), ("part-00000.parquet", 2),
        ("part-00000.parquet", 3), ("part-00001.parquet", 0)]


# ---------------------------------------------------------------------------------------
# drop_last and ranks


def test_drop_last_equal_full_batches_on_unbalanced_ranks(onehot_ds):
    root, _, schema = onehot_ds
    # Row groups [300 300 300 100] [300 300 300 100] [300 100] over 3 ranks, largest first:
    # rank 0 gets three 300s = 900, rank 1 two 300s + two 100s = 800, rank 2 700.
    readers = [ShardReader(root, "train", schema, BATCH, rank=r, world_size=3, drop_last=True)
               for r in range(3)]
    assert [r.rows for r in readers] == [900, 800, 700]
    counts = []
    for reader in readers:
        batches = list(reader)
        assert all(len(b.labels) == BATCH for b in batches)
        assert all(b.dense_features.shape == (BATCH, 13) for b in batches)
        assert all(b.sparse_features.lengths().shape[0] == 26 * BATCH for b in batches)
        counts.append(len(batches))
        assert len(reader) == len(batches)
        assert reader.max_batches_any_rank == 5
    assert counts == [700 // BATCH] * 3 == [5, 5, 5]


def test_two_ranks_get_balanced_rows(onehot_ds):
    """Round-robin would give 1500 / 900 rows; balancing by rows gives 1200 / 1200."""
    root, _, schema = onehot_ds
    readers = [ShardReader(root, "train", schema, BATCH, rank=r, world_size=2) for r in range(2)]
    assert [r.rows for r in readers] == [1200, 1200]
    assert [len(r) for r in readers] == [1200 // BATCH] * 2


def _groups(*rows: int) -> list[RowGroup]:
    return [RowGroup(Path(f"f{i // 3}"), i % 3, n) for i, n in enumerate(rows)]


@pytest.mark.parametrize("rows,world_size,want", [
    ([10, 25, 7, 13, 30], 2, [[0, 4], [1, 2, 3]]),  # 40 / 45
    ([100, 1, 1, 1, 1, 1], 2, [[0], [1, 2, 3, 4, 5]]),
    ([5, 5, 5, 5], 4, [[0], [1], [2], [3]]),  # equal sizes keep split order
    ([5, 5], 3, [[0], [1], []]),
])
def test_assign_row_groups(rows, world_size, want):
    groups = _groups(*rows)
    got = assign_row_groups(groups, world_size)
    assert got == want
    assert assign_row_groups(groups, world_size) == got  # deterministic


def test_assign_row_groups_balance_property():
    rng = np.random.default_rng(0)
    for _ in range(50):
        groups = _groups(*rng.integers(1, 1000, size=int(rng.integers(1, 40))))
        world_size = int(rng.integers(1, 9))
        got = assign_row_groups(groups, world_size)
        flat = [g for rank in got for g in rank]
        assert sorted(flat) == list(range(len(groups)))  # disjoint and complete
        assert all(rank == sorted(rank) for rank in got)  # split order
        totals = [sum(groups[g].rows for g in rank) for rank in got]
        assert max(totals) - min(totals) <= max(g.rows for g in groups)


def test_drop_last_single_rank_and_with_shuffle(onehot_ds):
    root, _, schema = onehot_ds
    for shuffle in (0, 500):
        reader = ShardReader(root, "train", schema, BATCH, drop_last=True, shuffle_buffer=shuffle, seed=3)
        batches = list(reader)
        assert len(batches) == len(reader) == 2400 // BATCH
        assert all(len(b.labels) == BATCH for b in batches)
    two = [list(ShardReader(root, "train", schema, BATCH, rank=r, world_size=2, drop_last=True,
                            shuffle_buffer=300, seed=1)) for r in range(2)]
    assert [len(b) for b in two] == [1200 // BATCH] * 2 == [9, 9]  # 1200 rows per rank
    assert all(len(b.labels) == BATCH for rank in two for b in rank)


def test_drop_last_reads_the_first_rows_of_each_rank(indexed, rows_of):
    ds = indexed([[10, 25, 7], [13, 30]])  # largest first: r0 gets 30, 10 = 40; r1 gets 25, 13, 7 = 45
    r1 = ShardReader(ds.path, "train", ds.schema, 8, rank=1, world_size=2, drop_last=True)
    rows = np.concatenate([rows_of(b) for b in r1])
    want = np.concatenate([np.arange(s, s + n) for s, n in ds.groups[1:4]])[: (40 // 8) * 8]
    np.testing.assert_array_equal(rows, want)


@pytest.mark.parametrize("shuffle", [0, 16])
@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_together_read_every_row_once(indexed, rows_of, shuffle, world_size):
    ds = indexed([[17, 40, 3], [25], [31, 9, 12, 6]])
    per_rank = []
    for rank in range(world_size):
        reader = ShardReader(ds.path, "train", ds.schema, 10, rank=rank, world_size=world_size,
                             drop_last=False, shuffle_buffer=shuffle, seed=4)
        rows = [rows_of(b) for b in reader]
        assert len(rows) == len(reader)
        per_rank.append(np.concatenate(rows))
        # the rank reads exactly the row groups it was assigned, in split order
        spans = [ds.groups[g] for g, _, _ in reader.groups]
        assert spans == sorted(spans)
        mine = np.concatenate([np.arange(s, s + n) for s, n in spans])
        np.testing.assert_array_equal(np.sort(per_rank[-1]), mine)
        if not shuffle:
            np.testing.assert_array_equal(per_rank[-1], mine)
    everything = np.concatenate(per_rank)
    np.testing.assert_array_equal(np.sort(everything), np.arange(ds.rows))


# ---------------------------------------------------------------------------------------
# Shuffle


def _epoch_rows(reader, rows_of) -> list[np.ndarray]:
    return [rows_of(b) for b in reader]


@pytest.fixture
def shuffled_ds(indexed):
    return indexed([[23, 40, 17], [35, 9], [50, 26]])  # 200 rows in 7 groups


def test_shuffle_is_deterministic_and_permutes(shuffled_ds, rows_of):
    ds = shuffled_ds

    def run(seed, shuffle=48, epoch=0):
        reader = ShardReader(ds.path, "train", ds.schema, 16, drop_last=False, shuffle_buffer=shuffle, seed=seed)
        reader.set_epoch(epoch)
        return np.concatenate(_epoch_rows(reader, rows_of))

    plain = run(0, shuffle=0)
    np.testing.assert_array_equal(plain, np.arange(ds.rows))
    a, b = run(7), run(7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, plain)
    np.testing.assert_array_equal(np.sort(a), np.arange(ds.rows))
    # more than a reordering of whole row groups: rows move within groups too
    within = [np.array_equal(np.sort(a[i:i + 16]), a[i:i + 16]) for i in range(0, ds.rows, 16)]
    assert not all(within)
    other_seed = run(8)
    assert not np.array_equal(a, other_seed)
    np.testing.assert_array_equal(np.sort(other_seed), np.arange(ds.rows))


def test_epochs_shuffle_differently(shuffled_ds, rows_of):
    ds = shuffled_ds
    reader = ShardReader(ds.path, "train", ds.schema, 16, drop_last=False, shuffle_buffer=48, seed=7)
    epochs = []
    for epoch in range(3):
        reader.set_epoch(epoch)
        epochs.append(np.concatenate(_epoch_rows(reader, rows_of)))
    for e in epochs:
        np.testing.assert_array_equal(np.sort(e), np.arange(ds.rows))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])
    # re-running an epoch gives the same order again
    reader.set_epoch(1)
    np.testing.assert_array_equal(np.concatenate(_epoch_rows(reader, rows_of)), epochs[1])


def test_epochs_shuffle_within_a_single_row_group(indexed, rows_of):
    """With one row group there is no group order to permute: the rows themselves must
    still come in a different order each epoch."""
    ds = indexed([[120]])
    reader = ShardReader(ds.path, "train", ds.schema, 10, drop_last=False, shuffle_buffer=60, seed=3)
    orders = []
    for epoch in range(2):
        reader.set_epoch(epoch)
        orders.append(np.concatenate(_epoch_rows(reader, rows_of)))
        np.testing.assert_array_equal(np.sort(orders[-1]), np.arange(120))
        assert not np.array_equal(orders[-1], np.arange(120))
    assert not np.array_equal(orders[0], orders[1])


def test_shuffle_mixes_row_groups_across_the_epoch(shuffled_ds, rows_of):
    """The first batches of a shuffled epoch do not always come from the first row group:
    rows from far apart in the split get mixed (a window alone cannot do that)."""
    ds = shuffled_ds
    first_group_rows = ds.groups[0][1]
    reader = ShardReader(ds.path, "train", ds.schema, 10, drop_last=False, shuffle_buffer=20, seed=0)
    firsts = []
    for epoch in range(8):
        reader.set_epoch(epoch)
        firsts.append(next(iter(reader)))
    starts = [rows_of(b).min() for b in firsts]
    assert any(s >= first_group_rows for s in starts)


def test_shuffled_generated_data_keeps_rows_intact(multihot_ds):
    """Shuffling moves whole rows: the multiset of (label, dense, ids) rows is unchanged."""
    root, _, schema = multihot_ds

    def rows(shuffle):
        out = []
        for b in ShardReader(root, "valid", schema, 64, drop_last=False, shuffle_buffer=shuffle, seed=2):
            feats = b.sparse_features.to_dict()
            per_feature = []
            for f in schema.sparse:
                jt = feats[f.name]
                offs = jt.offsets().tolist()
                vals = jt.values().tolist()
                per_feature.append([tuple(vals[offs[i]:offs[i + 1]]) for i in range(len(b.labels))])
            for i in range(len(b.labels)):
                out.append((float(b.labels[i]), tuple(b.dense_features[i].tolist()),
                            tuple(p[i] for p in per_feature)))
        return out

    plain, shuffled = rows(0), rows(128)
    assert plain != shuffled
    assert sorted(plain) == sorted(shuffled)


# ---------------------------------------------------------------------------------------
# Position save / restore


@pytest.mark.parametrize("shuffle", [0, 25, 64])
@pytest.mark.parametrize("drop_last", [False, True])
def test_resume_continues_at_next_batch(shuffled_ds, rows_of, shuffle, drop_last):
    ds = shuffled_ds

    def reader():
        return ShardReader(ds.path, "train", ds.schema, 10, drop_last=drop_last, shuffle_buffer=shuffle, seed=5)

    for epoch in (0, 1):
        full = reader()
        full.set_epoch(epoch)
        ref = _epoch_rows(full, rows_of)
        assert len(ref) == 20
        for k in (0, 1, 2, 3, 7, 12, 19, 20):
            state = full.state_dict(k)
            assert state["epoch"] == epoch
            resumed = reader()
            resumed.load_state_dict(state)
            got = _epoch_rows(resumed, rows_of)
            assert len(got) == len(ref) - k, (epoch, k)
            for a, b in zip(got, ref[k:]):
                np.testing.assert_array_equal(a, b)


def test_resume_generated_data_mid_file(onehot_ds):
    """Resume on real shards, at batches that start inside a row group and a file."""
    root, _, schema = onehot_ds
    for shuffle in (0, 300):
        ref = list(ShardReader(root, "train", schema, BATCH, drop_last=False, shuffle_buffer=shuffle, seed=9))
        for k in (3, 8, 15):
            r = ShardReader(root, "train", schema, BATCH, drop_last=False, shuffle_buffer=shuffle, seed=9)
            r.load_state_dict({"epoch": 0, "batches": k})
            got = list(r)
            assert len(got) == len(ref) - k
            for a, b in zip(got, ref[k:]):
                assert a.labels.equal(b.labels)
                assert a.dense_features.equal(b.dense_features)
                assert a.sparse_features.values().equal(b.sparse_features.values())
                assert a.sparse_features.lengths().equal(b.sparse_features.lengths())


def test_resume_then_next_epoch_is_a_full_epoch(shuffled_ds, rows_of):
    """After resuming mid-epoch, set_epoch starts the next epoch from its first batch."""
    ds = shuffled_ds

    def reader():
        return ShardReader(ds.path, "train", ds.schema, 10, drop_last=True, shuffle_buffer=30, seed=1)

    ref = reader()
    ref_epochs = []
    for epoch in range(3):
        ref.set_epoch(epoch)
        ref_epochs.append(_epoch_rows(ref, rows_of))
    assert not all(np.array_equal(a, b) for a, b in zip(ref_epochs[1], ref_epochs[2]))

    resumed = reader()
    resumed.load_state_dict(ref.state_dict(6) | {"epoch": 1})
    rest = _epoch_rows(resumed, rows_of)
    assert [r.tolist() for r in rest] == [r.tolist() for r in ref_epochs[1][6:]]
    resumed.set_epoch(2)
    assert resumed.state_dict(0) == {"epoch": 2, "batches": 0, "batch_size": 10, "world_size": 1, "layout": None}
    assert [r.tolist() for r in _epoch_rows(resumed, rows_of)] == [r.tolist() for r in ref_epochs[2]]


def test_state_dict_round_trips_through_a_checkpoint_like_dict(shuffled_ds):
    ds = shuffled_ds
    r = ShardReader(ds.path, "train", ds.schema, 10, shuffle_buffer=20, seed=1)
    r.set_epoch(4)
    state = r.state_dict(3)
    assert state == {"epoch": 4, "batches": 3, "batch_size": 10, "world_size": 1, "layout": None}
    other = ShardReader(ds.path, "train", ds.schema, 10, shuffle_buffer=20, seed=1)
    other.load_state_dict(json.loads(json.dumps(state)))  # checkpoints keep it as JSON
    assert other.state_dict(3) == state


# ---------------------------------------------------------------------------------------
# Prefetch thread of the reader


@pytest.mark.parametrize("prefetch_batches", [0, 1, 4])
def test_prefetch_setting_does_not_change_batches(shuffled_ds, rows_of, prefetch_batches):
    ds = shuffled_ds
    base = _epoch_rows(ShardReader(ds.path, "train", ds.schema, 10, shuffle_buffer=30, seed=2,
                                   prefetch_batches=0), rows_of)
    got = _epoch_rows(ShardReader(ds.path, "train", ds.schema, 10, shuffle_buffer=30, seed=2,
                                  prefetch_batches=prefetch_batches), rows_of)
    assert [g.tolist() for g in got] == [b.tolist() for b in base]


def test_breaking_out_of_the_reader_stops_its_thread(shuffled_ds):
    ds = shuffled_ds
    before = set(threading.enumerate())
    reader = ShardReader(ds.path, "train", ds.schema, 10, prefetch_batches=2)
    it = iter(reader)
    next(it)
    started = [t for t in threading.enumerate() if t not in before and t.name == "shardrec-prefetch"]
    assert len(started) == 1
    it.close()
    deadline = time.monotonic() + 2
    while started[0].is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not started[0].is_alive()


def test_shard_with_extra_and_reordered_columns(indexed, rows_of):
    """Only schema.json's columns matter: extra columns, another column order and another
    list field name (Spark writes 'element') are fine."""
    ds = indexed([[12, 9], [7]])
    path = ds.path / "train" / "part-00000.parquet"
    t = pq.read_table(path)
    m = t.column("m").cast(pa.list_(pa.field("element", pa.int64())))
    t = pa.table({"extra": pa.array(["x"] * t.num_rows), "m": m, "s": t.column("s"),
                  "half": t.column("half"), "label": t.column("label"), "idx": t.column("idx")})
    pq.write_table(t, path, row_group_size=12)
    rows = np.concatenate([rows_of(b) for b in ShardReader(ds.path, "train", ds.schema, 5, drop_last=False)])
    np.testing.assert_array_equal(rows, np.arange(ds.rows))


# ---------------------------------------------------------------------------------------
# Pinned memory (for copies to a GPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_pin_memory_needs_cuda(shuffled_ds):
    with pytest.raises(UserError, match="pin_memory needs CUDA"):
        ShardReader(shuffled_ds.path, "train", shuffled_ds.schema, 10, pin_memory=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pin_memory_batches_are_pinned_and_equal(shuffled_ds, rows_of):
    ds = shuffled_ds
    plain = list(ShardReader(ds.path, "train", ds.schema, 10, shuffle_buffer=30, seed=2))
    pinned = list(ShardReader(ds.path, "train", ds.schema, 10, shuffle_buffer=30, seed=2, pin_memory=True))
    assert all(b.dense_features.is_pinned() and b.sparse_features.values().is_pinned() for b in pinned)
    assert [rows_of(b).tolist() for b in pinned] == [rows_of(b).tolist() for b in plain]


# ---------------------------------------------------------------------------------------
# Block / batch_of: the per-row-group conversion the reader slices batches from


def test_batch_of_interleaved_features_across_blocks():
    """Multi-hot features between one-hot ones, and a batch made of two blocks' rows."""
    from shardrec.data_pipeline.convert_arrow import Block, batch_of
    from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature

    schema = DatasetSchema(label="y", dense=["d"], sparse=[
        SparseFeature("a", 100), SparseFeature("m1", 100, multi_hot=True), SparseFeature("b", 100),
        SparseFeature("c", 100), SparseFeature("m2", 100, multi_hot=True)])

    def table(start, n):
        i = np.arange(start, start + n)
        bags = [None if k % 5 == 3 else list(range(k % 3)) for k in i]
        return pa.table({"y": (i % 2).astype(np.float32), "d": i.astype(np.float32), "a": i, "m1": bags,
                         "b": i + 10, "c": i + 20, "m2": [[int(k)] * (k % 2) for k in i]},
                        schema=schema.arrow_schema())

    t1, t2 = table(0, 7), table(7, 6)
    batch = batch_of([(Block(t1, schema), 4, 7), (Block(t2.slice(1), schema), 0, 3)], schema)
    rows = [4, 5, 6, 8, 9, 10]
    feats = batch.sparse_features.to_dict()
    assert batch.dense_features[:, 0].tolist() == rows
    assert feats["a"].values().tolist() == rows and feats["c"].values().tolist() == [r + 20 for r in rows]
    assert feats["b"].lengths().tolist() == [1] * 6
    m1 = [[] if r % 5 == 3 else list(range(r % 3)) for r in rows]
    assert feats["m1"].lengths().tolist() == [len(x) for x in m1]
    assert feats["m1"].values().tolist() == [v for x in m1 for v in x]
    assert feats["m2"].values().tolist() == [r for r in rows if r % 2]
    whole = batch_of([(Block(pa.concat_tables([t1, t2]), schema), 0, 13)], schema)
    assert whole.sparse_features.values().tolist() == [
        *range(13), *[v for r in range(13) if r % 5 != 3 for v in range(r % 3)],
        *range(10, 23), *range(20, 33), *[r for r in range(13) if r % 2]]


# ---------------------------------------------------------------------------------------
# Resuming an epoch at another world size (data_pipeline/position.py).

def _readers(ds, world_size, batch_size, **kw):
    return [ShardReader(ds.path, "train", ds.schema, batch_size, rank=r, world_size=world_size,
                        prefetch_batches=0, **kw) for r in range(world_size)]


def _take(readers, rows_of, batches=None):
    """Run the ranks in lockstep for `batches` steps (None: the epoch); the rows each read."""
    out = []
    for reader in readers:
        rows = [rows_of(b) for b in reader]
        out.append(rows[:batches] if batches is not None else rows)
    return [np.concatenate(r) if r else np.zeros(0, int) for r in out]


@pytest.mark.parametrize("sizes", [[(2, 8, 3), (1, 16, None)], [(1, 16, 2), (2, 8, None)],
                                   [(2, 8, 2), (3, 6, 2), (1, 16, None)], [(3, 5, 4), (2, 7, None)]])
def test_an_epoch_continues_at_another_world_size_reading_every_row_once(indexed, rows_of, sizes):
    """(world size, batch per rank, steps) legs: each leg resumes the previous one's position
    (through JSON, as a checkpoint keeps it); over the job every row is read once, except the
    drop_last remainder of the last leg (fewer rows than one global batch)."""
    ds = indexed([[17, 40, 3], [25], [31, 9, 12, 6]])  # 143 rows, uneven row groups
    seen, state = [], None
    for world_size, batch, steps in sizes:
        readers = _readers(ds, world_size, batch)
        if state is not None:
            for r in readers:
                r.load_state_dict(json.loads(json.dumps(state)))
        rows = _take(readers, rows_of, steps)
        done = steps if steps is not None else len(readers[0]) - readers[0].start_batch
        assert all(len(r) == done * batch for r in rows)  # lockstep: equal full batches
        seen.extend(rows)
        state = readers[0].state_dict(readers[0].start_batch + done)
        assert all(r.state_dict(r.start_batch + done) == state for r in readers)  # one global position
    everything = np.concatenate(seen)
    assert len(np.unique(everything)) == len(everything)  # nothing twice
    missing = np.setdiff1d(np.arange(ds.rows), everything)
    last_world, last_batch, _ = sizes[-1]
    assert len(missing) < last_world * last_batch  # only the final drop_last remainder


def test_a_half_read_shuffled_epoch_continues_only_at_its_own_world_size(indexed):
    ds = indexed([[17, 40, 3], [25], [31, 9, 12, 6]])
    state = _readers(ds, 2, 8, shuffle_buffer=16)[0].state_dict(3)
    other = _readers(ds, 1, 16, shuffle_buffer=16)[0]
    with pytest.raises(UserError, match="shuffled epoch can continue at another world size.*only from its start"):
        other.load_state_dict(state)
    other.load_state_dict({**state, "batches": 0})  # an epoch boundary is fine
    assert other.start_batch == 0
