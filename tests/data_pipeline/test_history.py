"""Behaviour histories (sequence features): `convert interactions --history N [--history-features
F]` and `convert movielens --history N`, their schema.json entries, the validate check on list
lengths, and the reader keeping each list's order.

The no-leak tests compare every row of every split with a slow pure-Python reference: the
user's previous min(p, N) events strictly before the row (by time, ties by input order),
oldest first; never the event itself or a later one. On small generated logs with ties in
time, and on the real MovieLens 100K when ../shared/data is present (skipped otherwise).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.convert_interactions import convert_interactions, history_index
from shardrec.data_pipeline.convert_movielens import convert_movielens
from shardrec.data_pipeline.reader import ShardReader
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature, load_schema, write_schema
from shardrec.data_pipeline.validate import BadDataError
from shardrec.launch.cli import main

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ML100K = SHARED / "movielens_100k"
VIDEO = SHARED / "amazon_video_games" / "Video.txt"
needs_100k = pytest.mark.skipif(not (ML100K / "u.data").is_file(),
                                reason=f"MovieLens 100K sample not found at {ML100K} (../shared/data is CI-only)")
needs_video = pytest.mark.skipif(not VIDEO.is_file(),
                                 reason=f"Amazon Video Games sample not found at {VIDEO} (../shared/data is CI-only)")
SPLITS = ("train", "valid", "test")


# ---------------------------------------------------------------------------------------
# The reference: a plain Python loop over each user's events.

def reference(events: list[tuple], n: int) -> dict[tuple, list]:
    """events: (user, item, key) with key the event's place in time (time, input line);
    -> {(user, item): the items of that user's previous min(p, n) events, oldest first}."""
    by_user: dict = {}
    for user, item, key in events:
        by_user.setdefault(user, []).append((key, item))
    out = {}
    for user, evs in by_user.items():
        evs.sort()
        for p, (_, item) in enumerate(evs):
            out[user, item] = [it for _, it in evs[max(0, p - n):p]]
    return out


def check_histories(tables: dict[str, pa.Table], events: list[tuple], n: int) -> int:
    """Every row of every split against the reference, and the no-leak property checked on
    its own. events: (user_id, item_id, key) of every event, key its place in time (time,
    input line); rows are named by their (user_id, item_id) pair. -> rows checked."""
    want = reference(events, n)
    # rank[u, i]: the event's place in the whole log's time order (ties by input line)
    rank = np.full((max(e[0] for e in events) + 1, max(e[1] for e in events) + 1), -1, np.int64)
    for r, (u, i, _) in enumerate(sorted(events, key=lambda e: e[2])):
        rank[u, i] = r
    seen = 0
    for name, table in tables.items():
        users, items = (table.column(c).to_numpy() for c in ("user_id", "item_id"))
        hist = table.column("hist_item_id").combine_chunks()
        lengths = pc.list_value_length(hist).to_numpy()
        values = hist.flatten().to_numpy()
        expected = [want[p] for p in zip(users.tolist(), items.tolist())]
        assert lengths.tolist() == [len(e) for e in expected], name
        assert values.tolist() == [h for e in expected for h in e], name
        assert lengths.max(initial=0) <= n
        # No leak: each history entry is an event of the row's user strictly before the row
        # (never the row itself, never a later time, nor the same time later in the input),
        # entries oldest first.
        owner = np.repeat(np.arange(len(users)), lengths)
        hist_rank = rank[users[owner], values]
        assert (hist_rank >= 0).all() and (hist_rank < rank[users, items][owner]).all(), name
        assert (np.diff(hist_rank)[np.diff(owner) == 0] > 0).all(), name
        seen += len(users)
    return seen


def lists(table: pa.Table, name: str) -> list[list[int]]:
    return table.column(name).to_pylist()


def read_splits(out: Path) -> dict[str, pa.Table]:
    return {s: pq.read_table(out / s / "part-00000.parquet") for s in SPLITS if (out / s).is_dir()}


# ---------------------------------------------------------------------------------------
# history_index, the vectorised core.

def test_history_index_offsets_and_rows():
    group = np.array([0, 0, 0, 0, 1, 2, 2, 2])
    offsets, idx = history_index(group, 2)
    assert offsets.tolist() == [0, 0, 1, 3, 5, 5, 5, 6, 8]
    got = [idx[offsets[r]:offsets[r + 1]].tolist() for r in range(len(group))]
    assert got == [[], [0], [0, 1], [1, 2], [], [], [5], [5, 6]]
    offsets, idx = history_index(np.zeros(0, np.int64), 3)
    assert offsets.tolist() == [0] and len(idx) == 0


# ---------------------------------------------------------------------------------------
# convert interactions --history on a generated log: ties in time, users interleaved.

def _log(tmp_path: Path, seed: int = 0) -> tuple[Path, Path, list[tuple]]:
    """A log of 7 users (1 to 14 events each, distinct items per user, times drawn from 6
    values so that many tie), rows shuffled so users interleave; and an item table with a
    one-hot `cat` (some items have no row) and a multi-hot `tags`."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(7):
        for it in rng.choice(25, size=int(rng.integers(1, 15)), replace=False):
            rows.append((f"u{u}", f"i{it}", int(rng.integers(6))))
    rows = [rows[k] for k in rng.permutation(len(rows))]
    log = tmp_path / "log.csv"
    log.write_text("user,item,ts\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    items = tmp_path / "items.csv"
    items.write_text("id,cat,tags\n" + "".join(f"i{k},c{k % 4},t{k % 3}|t{k % 5}\n" for k in range(0, 25, 1)
                                              if k % 7 != 3))
    return log, items, rows


@pytest.mark.parametrize("split, use_time, n, cold", [
    ("leave_last_out", True, 3, 0.0), ("random", True, 3, 0.0), ("random", True, 50, 0.2),
    ("leave_last_out", False, 1, 0.0), ("random", False, 4, 0.0)])
def test_interactions_history_equals_the_reference_and_never_leaks(tmp_path, split, use_time, n, cold):
    log, items, rows = _log(tmp_path)
    out = tmp_path / "d"
    schema = convert_interactions([log], out, "user", "item", time="ts" if use_time else None, split=split,
                                  seed=2, cold_items=cold, item_features=items, item_key="id", item_sparse="cat",
                                  item_multi_hot="tags:|", history=n, history_features="cat")
    uid = {u: k for k, u in enumerate(pq.read_table(out / "users.parquet").column("raw_user").to_pylist())}
    catalogue = pq.read_table(out / "items.parquet")
    iid = {i: k for k, i in enumerate(catalogue.column("raw_item").to_pylist())}
    # by time, ties by input order; without --time the input order alone
    events = [(uid[u], iid[i], (t, line) if use_time else (line,)) for line, (u, i, t) in enumerate(rows)]
    tables = read_splits(out)
    assert check_histories(tables, events, n) == len(rows)  # every row of every split has its history
    cat_of = catalogue.column("cat").to_pylist()
    for table in tables.values():
        for hist, cats in zip(lists(table, "hist_item_id"), lists(table, "hist_cat")):
            assert cats == [cat_of[h] for h in hist]  # aligned with hist_item_id
    seq = {f.name: f for f in schema.sequences}
    assert list(seq) == ["hist_item_id", "hist_cat"]
    assert (seq["hist_item_id"].sequence_of, seq["hist_item_id"].max_length) == ("item_id", n)
    assert seq["hist_cat"].sequence_of == "cat"
    assert seq["hist_cat"].num_embeddings == next(f.num_embeddings for f in schema.sparse if f.name == "cat")
    # placed after the item features, before `time`
    assert schema.sparse_names == ["user_id", "item_id", "cat", "tags", "hist_item_id", "hist_cat"]
    assert pq.read_schema(out / "train" / "part-00000.parquet").names[-3:] == ["hist_item_id", "hist_cat", "time"]
    assert schema.interactions["history"] == ["hist_item_id", "hist_cat"]
    assert schema.interactions["history_length"] == n
    assert load_schema(out).to_json() == schema.to_json()


def test_history_does_not_change_the_other_columns_or_the_split(tmp_path):
    log, items, _ = _log(tmp_path, seed=1)
    kw = dict(time="ts", split="random", seed=4, item_features=items, item_key="id", item_sparse="cat")
    plain = convert_interactions([log], tmp_path / "a", "user", "item", **kw)
    hist = convert_interactions([log], tmp_path / "b", "user", "item", history=2, **kw)
    assert plain.splits == hist.splits
    assert plain.interactions["history"] == [] and plain.interactions["history_length"] == 0
    assert plain.sequences == [] and hist.interactions["history"] == ["hist_item_id"]
    a, b = read_splits(tmp_path / "a"), read_splits(tmp_path / "b")
    for s in a:
        assert b[s].drop_columns(["hist_item_id"]).equals(a[s])


def test_the_reader_serves_histories_in_order(tmp_path):
    log, items, _ = _log(tmp_path, seed=2)
    out = tmp_path / "d"
    schema = convert_interactions([log], out, "user", "item", time="ts", split="leave_last_out", history=4)
    train = read_splits(out)["train"]
    batch = next(iter(ShardReader(out, "train", load_schema(out), train.num_rows, drop_last=False)))
    kjt = batch.sparse_features
    assert kjt.keys() == schema.sparse_names
    flat = [h for hist in lists(train, "hist_item_id") for h in hist]
    assert kjt["hist_item_id"].values().tolist() == flat
    assert kjt["hist_item_id"].lengths().tolist() == [len(h) for h in lists(train, "hist_item_id")]


@pytest.mark.parametrize("kwargs, message", [
    ({"history": -1}, r"--history must be a non-negative integer"),
    ({"history": 1.5}, r"--history must be a non-negative integer"),
    ({"history_features": "cat"}, r"--history-features needs --history N"),
    ({"history": 2, "history_features": "colour"}, r"--history-features 'colour': not an item feature \(item "
                                                   r"features: cat, tags\)"),
    ({"history": 2, "history_features": "tags"}, r"--history-features 'tags': a multi-hot item feature"),
    ({"history": 2, "history_features": "cat,cat"}, r"--history-features 'cat' is named twice"),
    ({"item_sparse": "cat,hist_cat"}, r"feature name 'hist_cat' is reserved \(.*hist_\*\)"),
])
def test_history_option_errors(tmp_path, kwargs, message):
    log, items, _ = _log(tmp_path)
    (tmp_path / "items.csv").write_text("id,cat,tags,hist_cat\ni1,a,x,b\n")
    args = {"item_features": items, "item_key": "id", "item_sparse": "cat", "item_multi_hot": "tags:|", **kwargs}
    with pytest.raises(UserError, match=message):
        convert_interactions([log], tmp_path / "d", "user", "item", **args)
    assert not (tmp_path / "d").exists()


def test_command_line_history_flags(tmp_path, capsys):
    log, items, _ = _log(tmp_path)
    base = ["convert", "interactions", "--input", str(log), "--user", "user", "--item", "item", "--time", "ts",
            "--item-features", str(items), "--item-key", "id", "--item-sparse", "cat", "--item-multi-hot", "tags:|"]
    assert main([*base, "--history", "5", "--history-features", "cat", "--out", str(tmp_path / "d")]) == 0
    assert "; histories of up to 5: hist_item_id, hist_cat" in capsys.readouterr().out
    assert load_schema(tmp_path / "d").interactions["history_length"] == 5
    assert main([*base, "--history", "5", "--history-features", "tags", "--out", str(tmp_path / "e")]) == 2
    assert "--history-features 'tags': a multi-hot item feature" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# convert movielens --history on a generated 1M-format folder (ties in time, shuffled lines).

def _write_1m(root: Path, seed: int = 0) -> list[tuple[int, int, int, int]]:
    rng = np.random.default_rng(seed)
    root.mkdir()
    (root / "users.dat").write_text("".join(f"{u}::{'MF'[u % 2]}::{(1, 18, 25, 35)[u % 4]}::{u % 21}::{10000 + u}\n"
                                            for u in range(1, 7)))
    (root / "movies.dat").write_text("".join(f"{m}::Movie {m} ({1980 + m})::{('Action', 'Comedy', 'Drama')[m % 3]}\n"
                                             for m in range(1, 16)))
    ratings = [(u, int(m), int(rng.integers(1, 6)), 978300000 + int(rng.integers(5)))
               for u in range(1, 7) for m in rng.choice(np.arange(1, 16), size=int(rng.integers(2, 15)), replace=False)]
    ratings = [ratings[k] for k in rng.permutation(len(ratings))]
    (root / "ratings.dat").write_text("".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in ratings))
    return ratings


def _check_movielens(out: Path, ratings: list[tuple], n: int) -> int:
    """Every row's hist_item_id against the reference (key: timestamp, line); -> rows seen."""
    assert len({(u, m) for u, m, _, _ in ratings}) == len(ratings)  # rows are named by the pair
    return check_histories(read_splits(out), [(u, m, (t, line)) for line, (u, m, _, t) in enumerate(ratings)], n)


@pytest.mark.parametrize("n", [1, 3, 50])
def test_movielens_history_equals_the_reference_and_never_leaks(tmp_path, n):
    ratings = _write_1m(tmp_path / "ml1m")
    schema = convert_movielens(tmp_path / "ml1m", tmp_path / "out", seed=3, split=(0.6, 0.2, 0.2), history=n)
    assert _check_movielens(tmp_path / "out", ratings, n) == len(ratings)
    (seq,) = schema.sequences
    assert (seq.name, seq.sequence_of, seq.max_length, seq.multi_hot) == ("hist_item_id", "item_id", n, True)
    assert seq.num_embeddings == next(f.num_embeddings for f in schema.sparse if f.name == "item_id")
    assert schema.source["history"] == n and load_schema(tmp_path / "out").to_json() == schema.to_json()


def _assert_same_split(a: Path, b: Path) -> None:
    """The same rows in each split, in the same order; b has hist_item_id besides."""
    ta, tb = read_splits(a), read_splits(b)
    assert ta.keys() == tb.keys()
    for s in ta:
        assert "hist_item_id" not in ta[s].column_names
        assert tb[s].drop_columns(["hist_item_id"]).equals(ta[s]), s


def test_movielens_split_is_identical_with_and_without_history(tmp_path):
    _write_1m(tmp_path / "ml1m", seed=5)
    for seed in (0, 7):
        plain = convert_movielens(tmp_path / "ml1m", tmp_path / f"a{seed}", seed=seed, split=(0.6, 0.2, 0.2))
        hist = convert_movielens(tmp_path / "ml1m", tmp_path / f"b{seed}", seed=seed, split=(0.6, 0.2, 0.2),
                                 history=4)
        assert plain.splits == hist.splits and plain.sequences == []
        assert "history" not in plain.source  # no history: schema.json as it always was
        _assert_same_split(tmp_path / f"a{seed}", tmp_path / f"b{seed}")


def test_movielens_history_errors_and_command_line(tmp_path, capsys):
    _write_1m(tmp_path / "ml1m")
    with pytest.raises(UserError, match=r"--history must be a non-negative integer"):
        convert_movielens(tmp_path / "ml1m", tmp_path / "out", history=-2)
    assert main(["convert", "movielens", "--input", str(tmp_path / "ml1m"), "--out", str(tmp_path / "out"),
                 "--history", "7"]) == 0
    assert "hist_item_id of up to 7 movies" in capsys.readouterr().out
    assert load_schema(tmp_path / "out").sequences[0].max_length == 7


# ---------------------------------------------------------------------------------------
# The real MovieLens 100K (and Video Games): both converters, --history 50.

@pytest.fixture(scope="module")
def ml100k_ratings() -> list[tuple[int, int, int, int]]:
    data = np.loadtxt(ML100K / "u.data", dtype=np.int64)
    return [tuple(int(v) for v in row) for row in data]


@needs_100k
def test_movielens_100k_history_never_leaks_and_keeps_the_split(tmp_path, ml100k_ratings):
    plain = convert_movielens(ML100K, tmp_path / "plain", seed=0)
    hist = convert_movielens(ML100K, tmp_path / "hist", seed=0, history=50)
    assert plain.splits == hist.splits == {"train": 80_000, "valid": 10_000, "test": 10_000}
    _assert_same_split(tmp_path / "plain", tmp_path / "hist")
    assert _check_movielens(tmp_path / "hist", ml100k_ratings, 50) == 100_000
    batch = next(iter(ShardReader(tmp_path / "hist", "train", hist, 512)))
    assert batch.sparse_features.keys()[-1] == "hist_item_id"


@needs_100k
def test_interactions_100k_history_never_leaks(tmp_path, ml100k_ratings):
    out = tmp_path / "d"
    convert_interactions([ML100K / "u.data"], out, "user", "item", columns=["user", "item", "rating", "time"],
                         header=False, time="time", split="leave_last_out", history=50)
    uid = {u: k for k, u in enumerate(pq.read_table(out / "users.parquet").column("raw_user").to_pylist())}
    iid = {i: k for k, i in enumerate(pq.read_table(out / "items.parquet").column("raw_item").to_pylist())}
    events = [(uid[str(u)], iid[str(m)], (t, line)) for line, (u, m, _, t) in enumerate(ml100k_ratings)]
    assert check_histories(read_splits(out), events, 50) == 100_000


@needs_video
def test_video_games_leave_last_out_history_50(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # ../shared is relative to the repository root
    args = ("--input ../shared/data/amazon_video_games/Video.txt --columns user,item --header false "
            "--delimiter ' ' --user user --item item --split leave_last_out --history 50")
    assert main(["convert", "interactions", *shlex.split(args), "--out", str(tmp_path / "v")]) == 0
    schema = load_schema(tmp_path / "v")
    assert schema.splits == {"train": 225_305, "valid": 30_901, "test": 30_901}
    tables = read_splits(tmp_path / "v")
    # Without --time, `time` is the row's input position: unique, so it orders every user's rows.
    for table in tables.values():
        lengths = pc.list_value_length(table.column("hist_item_id")).to_numpy()
        assert lengths.max() <= 50
    whole = pa.concat_tables(tables.values())
    users, items, times = (whole.column(c).to_numpy() for c in ("user_id", "item_id", "time"))
    hist = whole.column("hist_item_id").combine_chunks()
    lengths = pc.list_value_length(hist).to_numpy()
    # Each history item's time, through the (user, item) pair: every one strictly earlier, increasing.
    pair = users * schema.interactions["num_items"] + items
    order = np.argsort(pair)
    row_of = lambda p: order[np.searchsorted(pair[order], p)]  # noqa: E731
    owner = np.repeat(np.arange(len(whole)), lengths)
    hist_time = times[row_of(users[owner] * schema.interactions["num_items"] + hist.flatten().to_numpy())]
    assert (hist_time < times[owner]).all()
    assert (np.diff(hist_time)[np.diff(owner) == 0] > 0).all()
    # ... and exactly the previous min(p, 50): p = rows of the user before this one.
    before = np.searchsorted(np.sort(users * (1 << 32) + times), users * (1 << 32) + times) \
        - np.searchsorted(np.sort(users), users)
    assert (lengths == np.minimum(before, 50)).all()
    test_mean = float(pc.mean(pc.list_value_length(tables["test"].column("hist_item_id"))).as_py())
    assert round(test_mean, 2) == 7.88


# ---------------------------------------------------------------------------------------
# schema.json: sequence_of / max_length.

def _schema(**hist) -> DatasetSchema:
    sparse = [SparseFeature("user_id", 10), SparseFeature("item_id", 20), SparseFeature("genres", 5, True)]
    if hist:
        sparse.append(SparseFeature("hist_item_id", **{"num_embeddings": 20, "multi_hot": True,
                                                       "sequence_of": "item_id", "max_length": 5, **hist}))
    return DatasetSchema(label="label", dense=["d"], sparse=sparse, splits={"train": 3})


def test_schema_round_trip_and_defaults_left_out():
    schema = _schema(max_length=8)
    obj = schema.to_json()
    assert obj["sparse"][-1] == {"name": "hist_item_id", "num_embeddings": 20, "multi_hot": True,
                                 "sequence_of": "item_id", "max_length": 8}
    back = DatasetSchema.from_json(json.loads(json.dumps(obj)))
    assert back == schema and [f.name for f in back.sequences] == ["hist_item_id"]
    assert back.arrow_schema().field("hist_item_id").type == pa.list_(pa.int64())
    # Features at the defaults are written exactly as before the two fields existed.
    plain = _schema().to_json()
    assert all(set(f) == {"name", "num_embeddings", "multi_hot"} for f in plain["sparse"])
    assert all(set(f) == {"name", "num_embeddings", "multi_hot"} for f in obj["sparse"][:-1])
    assert _schema().sequences == []


def test_an_existing_schema_json_stays_byte_identical(tmp_path):
    text = json.dumps({"format": "shardrec-parquet", "version": 1, "label": "label", "dense": ["d"],
                       "sparse": [{"name": "a", "num_embeddings": 3, "multi_hot": False},
                                  {"name": "b", "num_embeddings": 4, "multi_hot": True}],
                       "splits": {"train": 2}, "teacher_auc": {}, "source": {"x": 1}}, indent=2) + "\n"
    (tmp_path / "schema.json").write_text(text)
    schema = load_schema(tmp_path)
    write_schema(tmp_path, schema)
    assert (tmp_path / "schema.json").read_text() == text


@pytest.mark.parametrize("hist, message", [
    ({"sequence_of": "movie_id"}, r"sequence feature 'hist_item_id' has sequence_of 'movie_id', which names no "
                                  r"other sparse feature of this schema \(sparse features: user_id, item_id"),
    ({"num_embeddings": 21}, r"sequence feature 'hist_item_id' has num_embeddings 21, but its sequence_of "
                             r"'item_id' has 20"),
    ({"max_length": -1}, r"sparse feature 'hist_item_id' has max_length -1, expected an integer >= 0"),
    ({"max_length": 0}, r"sequence feature 'hist_item_id' has max_length 0, expected >= 1"),
    ({"multi_hot": False}, r"sequence feature 'hist_item_id' has multi_hot false"),
    ({"sequence_of": "hist_item_id"}, r"sequence feature 'hist_item_id' has sequence_of 'hist_item_id', which "
                                      r"names no other sparse feature"),
    ({"sequence_of": None}, r"sparse feature 'hist_item_id' has max_length 5 but no sequence_of"),
])
def test_schema_errors_name_schema_json_and_the_feature(tmp_path, hist, message):
    write_schema(tmp_path, _schema(**hist))
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "schema.json")) + ": " + message):
        load_schema(tmp_path)


# ---------------------------------------------------------------------------------------
# The reader keeps each list's inner order; validate refuses a list past max_length.

SEQ_SCHEMA = DatasetSchema(label="label", dense=["idx"], sparse=[
    SparseFeature("item", 100), SparseFeature("hist", 100, True, "item", 5)])


def seq_list(i: int) -> list[int]:
    """Row i's history: i % 6 ids (at most 5, its max_length), in an order that is neither
    ascending nor descending."""
    return [(i * 31 + 17 * j * j + (40 if j % 2 else 0)) % 100 for j in range(min(i % 6, 5))]


def _write_seq(root: Path, rows: int, group_rows: int, lists_of=seq_list) -> Path:
    (root / "train").mkdir(parents=True)
    idx = np.arange(rows)
    table = pa.table({"label": pa.array((idx % 2).astype(np.float32)), "idx": pa.array(idx.astype(np.float32)),
                      "item": pa.array(idx % 100), "hist": pa.array([lists_of(int(i)) for i in idx],
                                                                   pa.list_(pa.int64()))},
                     schema=SEQ_SCHEMA.arrow_schema())
    half = rows // 2
    for k, part in enumerate((table.slice(0, half), table.slice(half))):
        pq.write_table(part, root / "train" / f"part-{k:05d}.parquet", row_group_size=group_rows)
    write_schema(root, DatasetSchema(label="label", dense=["idx"], sparse=list(SEQ_SCHEMA.sparse),
                                     splits={"train": rows}))
    return root


@pytest.mark.parametrize("shuffle_buffer", [0, 24])
def test_reader_keeps_the_order_inside_each_list(tmp_path, shuffle_buffer):
    assert seq_list(4) != sorted(seq_list(4)) and seq_list(4) != sorted(seq_list(4), reverse=True)
    root = _write_seq(tmp_path / "ds", rows=130, group_rows=9)
    reader = ShardReader(root, "train", load_schema(root), 8, drop_last=False, shuffle_buffer=shuffle_buffer,
                         seed=3, prefetch_batches=0)
    order = []
    for batch in reader:
        idx = batch.dense_features[:, 0].numpy().astype(np.int64)
        hist = batch.sparse_features["hist"]
        lengths = hist.lengths().tolist()
        values = hist.values().tolist()
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
        got = [values[starts[k]:starts[k + 1]] for k in range(len(idx))]
        assert got == [seq_list(int(i)) for i in idx]
        assert batch.sparse_features["item"].values().tolist() == (idx % 100).tolist()
        order += idx.tolist()
    assert sorted(order) == list(range(130))
    assert (order != list(range(130))) == bool(shuffle_buffer)  # rows move, lists keep their order


def test_a_list_longer_than_max_length_is_refused_with_file_row_group_row_and_column(tmp_path):
    # Files of 45 rows (0..44, 45..89) in row groups of 15: row 63 is file 1, row group 1, row 3.
    too_long = lambda i: list(range(7)) if i == 63 else seq_list(i)  # noqa: E731
    root = _write_seq(tmp_path / "ds", rows=90, group_rows=15, lists_of=too_long)
    reader = ShardReader(root, "train", load_schema(root), 10, drop_last=False, prefetch_batches=0)
    with pytest.raises(BadDataError) as err:
        list(reader)
    path = root / "train" / "part-00001.parquet"
    msg = str(err.value)
    assert f"{path}, row group 1, row 3: sequence column 'hist' has a list of 7 ids, longer than its " \
           "max_length 5 (schema.json)" in msg, msg
    # ... and through a shuffle window, the same file, row group and row.
    reader = ShardReader(root, "train", load_schema(root), 10, drop_last=False, prefetch_batches=0,
                         shuffle_buffer=30, seed=1)
    with pytest.raises(BadDataError, match=re.escape(f"{path}, row group 1, row 3: sequence column 'hist'")):
        list(reader)



@pytest.mark.parametrize("n", [1, 3, 50])
def test_movielens_liked_history_holds_only_earlier_ratings_of_4_or_5(tmp_path, n):
    ratings = _write_1m(tmp_path / "ml1m")
    convert_movielens(tmp_path / "ml1m", tmp_path / "all", seed=3, history=n)
    convert_movielens(tmp_path / "ml1m", tmp_path / "liked", seed=3, history=n, history_of="liked")
    key = {(u, m): (t, line) for line, (u, m, _, t) in enumerate(ratings)}
    liked = [(u, m, (t, line)) for line, (u, m, r, t) in enumerate(ratings) if r >= 4]
    rows = 0
    for name, table in read_splits(tmp_path / "liked").items():
        for u, m, hist in zip(*(table.column(c).to_pylist() for c in ("user_id", "item_id", "hist_item_id"))):
            earlier = sorted((k, it) for uu, it, k in liked if uu == u and k < key[u, m])
            assert hist == [it for _, it in earlier][max(0, len(earlier) - n):], (name, u, m)
            rows += 1
    assert rows == len(ratings)
    # The same rows in each split as without the filter.
    for name, table in read_splits(tmp_path / "all").items():
        assert read_splits(tmp_path / "liked")[name].drop_columns(["hist_item_id"]).equals(
            table.drop_columns(["hist_item_id"])), name
