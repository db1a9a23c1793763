"""`shardrec convert interactions`: implicit feedback -> a per-user split data set, on small
hand-made files, plus the three documented commands on ../shared/data (skipped without it)."""

from __future__ import annotations

import gzip
import json
import shlex
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.convert_interactions import convert_interactions, ratio_counts
from shardrec.data_pipeline.reader import ShardReader
from shardrec.data_pipeline.schema import load_schema
from shardrec.launch.cli import main

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not all((SHARED / f).is_file() for f in ("movielens_100k/u.data", "amazon_video_games/Video.txt",
                                             "amazon_beauty/Beauty.txt")),
    reason=f"MovieLens 100K / Amazon samples not found under {SHARED} (../shared/data is CI-only)")


def _csv(path: Path, header: str, rows) -> Path:
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def _split(out: Path, name: str) -> pa.Table:
    return pq.read_table(out / name / "part-00000.parquet")


def _pairs(out: Path, name: str) -> list[tuple[str, str]]:
    """(raw user, raw item) of a split's rows, in file order."""
    t = _split(out, name)
    users = pq.read_table(out / "users.parquet").column("raw_user").to_pylist()
    items = pq.read_table(out / "items.parquet").column("raw_item").to_pylist()
    return [(users[u], items[i]) for u, i in zip(t.column("user_id").to_pylist(), t.column("item_id").to_pylist())]


def _all_pairs(out: Path) -> list[tuple[str, str]]:
    return [p for s in ("train", "valid", "test") if (out / s).is_dir() for p in _pairs(out, s)]


def _grid(path: Path, users: int, items: int, seed: int = 0) -> Path:
    """Each user with a random subset of the items (at least 5), random times."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for i in rng.choice(items, size=int(rng.integers(5, items)), replace=False):
            rows.append((f"u{u}", f"i{i}", int(rng.integers(1_000_000))))
    return _csv(path, "user,item,ts", rows)


def test_ids_follow_first_appearance_and_raw_ids_round_trip(tmp_path):
    rows = [("bob", 30, 5), ("al", 10, 3), ("bob", 20, 1), ("cy", 30, 2), (7, 40, 9), ("al", 20, 4)]
    src = _csv(tmp_path / "log.csv", "user,item,ts", rows)
    schema = convert_interactions([src], tmp_path / "d", "user", "item", time="ts", split="leave_last_out")
    users = pq.read_table(tmp_path / "d" / "users.parquet")
    items = pq.read_table(tmp_path / "d" / "items.parquet")
    assert users.column("raw_user").to_pylist() == ["bob", "al", "cy", "7"]
    assert users.column("user_id").to_pylist() == [0, 1, 2, 3]
    assert items.column("raw_item").to_pylist() == ["30", "10", "20", "40"]
    assert sorted(_all_pairs(tmp_path / "d")) == sorted((str(u), str(i)) for u, i, _ in rows)
    assert [(f.name, f.num_embeddings) for f in schema.sparse] == [("user_id", 4), ("item_id", 4)]
    inter = schema.interactions
    assert (inter["num_users"], inter["num_items"], inter["time"], inter["split"]) == (4, 4, "time", "leave_last_out")
    assert inter["category"] is None and inter["users_file"] == "users.parquet"
    # Fewer than 3 interactions each: leave_last_out puts everything in train, sorted by (user, time).
    train = _split(tmp_path / "d", "train")
    assert schema.splits == {"train": 6}
    assert train.column("user_id").to_pylist() == [0, 0, 1, 1, 2, 3]
    assert train.column("time").to_pylist() == [1, 5, 3, 4, 2, 9]
    assert train.column("label").to_pylist() == [1.0] * 6


def test_ratio_counts_match_recbole_split_by_ratio():
    n = np.array([1, 2, 3, 4, 10, 11, 20, 29])
    train, valid, test = ratio_counts(n, (0.8, 0.1, 0.1))
    # RecBole: cnt = [int(r * n)], train = rest; then test, then valid, take one from train
    # when 0 < r * n < 1 and train > 1.
    assert test.tolist() == [0, 1, 1, 1, 1, 1, 2, 2]
    assert valid.tolist() == [0, 0, 1, 1, 1, 1, 2, 2]
    assert train.tolist() == [1, 1, 1, 2, 8, 9, 16, 25]
    assert ((train + valid + test) == n).all()


def test_random_split_counts_per_user(tmp_path):
    rows = [("a", f"i{k}", k) for k in range(10)] + [("b", f"i{k}", k) for k in range(3)] + [("c", "i0", 0)]
    src = _csv(tmp_path / "log.csv", "user,item,ts", rows)
    convert_interactions([src], tmp_path / "d", "user", "item", time="ts", seed=3)
    per_split = {s: [u for u, _ in _pairs(tmp_path / "d", s)] for s in ("train", "valid", "test")}
    assert [per_split[s].count("a") for s in ("train", "valid", "test")] == [8, 1, 1]
    assert [per_split[s].count("b") for s in ("train", "valid", "test")] == [1, 1, 1]
    assert [per_split[s].count("c") for s in ("train", "valid", "test")] == [1, 0, 0]


def test_seeded_split_is_reproducible_and_the_seed_matters(tmp_path):
    src = _grid(tmp_path / "log.csv", users=40, items=30)
    runs = {name: convert_interactions([src], tmp_path / name, "user", "item", time="ts", seed=seed)
            for name, seed in (("a", 1), ("b", 1), ("c", 2))}
    assert runs["a"].splits == runs["b"].splits == runs["c"].splits  # counts depend on n only
    assert _split(tmp_path / "a", "test").equals(_split(tmp_path / "b", "test"))
    assert _pairs(tmp_path / "a", "test") != _pairs(tmp_path / "c", "test")
    # Each user's rows are still in time order in every split.
    t = _split(tmp_path / "c", "train")
    key = t.column("user_id").to_numpy() * 10**7 + t.column("time").to_numpy()
    assert (np.diff(key) >= 0).all()


def test_leave_last_out_by_time_and_by_input_order(tmp_path):
    rows = [("u", "a", 30), ("u", "b", 10), ("u", "c", 50), ("u", "d", 20), ("v", "a", 1), ("v", "b", 2)]
    src = _csv(tmp_path / "log.csv", "user,item,ts", rows)
    convert_interactions([src], tmp_path / "t", "user", "item", time="ts", split="leave_last_out")
    assert _pairs(tmp_path / "t", "test") == [("u", "c")]
    assert _pairs(tmp_path / "t", "valid") == [("u", "a")]
    assert _pairs(tmp_path / "t", "train") == [("u", "b"), ("u", "d"), ("v", "a"), ("v", "b")]
    # Without --time the input order is the time order (and `time` is the row's position).
    convert_interactions([src], tmp_path / "o", "user", "item", split="leave_last_out")
    assert _pairs(tmp_path / "o", "test") == [("u", "d")]
    assert _pairs(tmp_path / "o", "valid") == [("u", "c")]
    assert _split(tmp_path / "o", "train").column("time").to_pylist() == [0, 1, 4, 5]
    assert load_schema(tmp_path / "o").interactions["time"] is None


def test_min_rating_and_duplicates(tmp_path):
    rows = [("u", "a", 5, 10), ("u", "b", 2, 11), ("u", "a", 4, 3), ("v", "a", 4, 1), ("v", "c", 3.5, 2),
            ("v", "c", 4.5, 1)]
    src = _csv(tmp_path / "log.csv", "user,item,rating,ts", rows)
    schema = convert_interactions([src], tmp_path / "d", "user", "item", time="ts", rating="rating",
                                  min_rating=4, split="leave_last_out")
    train = _split(tmp_path / "d", "train")
    assert sorted(_pairs(tmp_path / "d", "train")) == [("u", "a"), ("v", "a"), ("v", "c")]
    # ("u", "a") twice: the earliest (ts 3) stays; ("v", "c", 3.5) is below 4.
    assert train.column("time").to_pylist() == [3, 1, 1]
    src_info = schema.source
    assert (src_info["rows_read"], src_info["below_min_rating"], src_info["dropped_duplicates"]) == (6, 2, 1)
    assert src_info["rows"] == 3 and src_info["options"]["min_rating"] == 4


def test_min_interaction_filters_are_one_pass(tmp_path):
    rows = [("u", "a"), ("u", "b"), ("u", "c"), ("v", "a"), ("v", "b"), ("w", "a")]
    src = _csv(tmp_path / "log.csv", "user,item", rows)
    schema = convert_interactions([src], tmp_path / "d", "user", "item", min_user_interactions=2,
                                  min_item_interactions=2, split="leave_last_out")
    # w (1 row) and c (1 row) go; u keeps 2 rows, counted before c was dropped.
    assert sorted(_all_pairs(tmp_path / "d")) == [("u", "a"), ("u", "b"), ("v", "a"), ("v", "b")]
    assert (schema.source["filtered_rows"], schema.source["filtered_users"], schema.source["filtered_items"]) == (2, 1, 1)


def test_cold_items_go_to_test_only(tmp_path):
    src = _grid(tmp_path / "log.csv", users=30, items=20, seed=4)
    schema = convert_interactions([src], tmp_path / "d", "user", "item", time="ts", cold_items=0.3, seed=5)
    items = pq.read_table(tmp_path / "d" / "items.parquet")
    assert schema.interactions["cold_items"] == 6
    counts = {s: np.bincount(_split(tmp_path / "d", s).column("item_id").to_numpy(), minlength=20)
              for s in ("train", "valid", "test")}
    assert (items.column("train_count").to_numpy() == counts["train"]).all()
    cold = np.flatnonzero((counts["train"] == 0) & (counts["valid"] == 0))
    assert len(cold) == 6 and (counts["test"][cold] > 0).all()
    rows = pcsv.read_csv(src, convert_options=pcsv.ConvertOptions(column_types={"item": pa.string()}))
    raw = items.column("raw_item").to_pylist()
    per_item = {it: rows.column("item").to_pylist().count(it) for it in raw}
    assert all(counts["test"][i] == per_item[raw[i]] for i in cold)  # every row of a cold item is in test
    again = convert_interactions([src], tmp_path / "e", "user", "item", time="ts", cold_items=0.3, seed=5)
    assert again.splits == schema.splits


def test_cold_users_go_to_test_only(tmp_path):
    src = _grid(tmp_path / "log.csv", users=30, items=20, seed=4)
    schema = convert_interactions([src], tmp_path / "d", "user", "item", time="ts", cold_users=0.2, seed=5)
    assert schema.interactions["cold_users"] == 6
    users = {s: set(_split(tmp_path / "d", s).column("user_id").to_pylist()) for s in ("train", "valid", "test")}
    cold = users["test"] - users["train"] - users["valid"]
    assert len(cold) == 6 and len(users["train"]) == 24
    every = pcsv.read_csv(src, convert_options=pcsv.ConvertOptions(column_types={"user": pa.string()}))
    raw = pq.read_table(tmp_path / "d" / "users.parquet").column("raw_user").to_pylist()
    test_users = _split(tmp_path / "d", "test").column("user_id").to_pylist()
    for u in cold:  # every row of a cold user is in test
        assert test_users.count(u) == every.column("user").to_pylist().count(raw[u])


def test_features_join_with_missing_rows_multi_hot_and_flags(tmp_path):
    src = _csv(tmp_path / "log.csv", "user,item", [(1, "m1"), (2, "m2"), (3, "m1"), (1, "m3")])
    (tmp_path / "users.txt").write_text("1|25|M|a;b\n2|7|F|\n4|100|M|c\n")  # user 3 has no row
    (tmp_path / "items.csv").write_text("id,title,f0,f1,f2\nm1,One,0,1,1\nm2,Two,1,0,0\nm3,Three,0,0,0\n")
    schema = convert_interactions(
        [src], tmp_path / "d", "user", "item", split="leave_last_out",
        user_features=tmp_path / "users.txt", user_features_columns="uid,age,sex,tags", user_key="uid",
        user_sparse="age,sex", user_multi_hot="tags:;",
        item_features=tmp_path / "items.csv", item_key="id", item_sparse="title", item_flags=["kind=f0,f1,f2"])
    assert [(f.name, f.num_embeddings, f.multi_hot) for f in schema.sparse] == [
        ("user_id", 3, False), ("item_id", 3, False), ("age", 4, False), ("sex", 3, False), ("tags", 4, True),
        ("title", 4, False), ("kind", 4, True)]
    assert schema.interactions["user_features"] == ["age", "sex", "tags"]
    assert schema.interactions["item_features"] == ["title", "kind"]
    assert schema.interactions["category"] == "title"
    users = pq.read_table(tmp_path / "d" / "users.parquet").to_pylist()
    # Ages sorted as numbers (7, 25, 100 -> 1, 2, 3); user 3 has no row: all zeros / empty list.
    assert users == [{"user_id": 0, "raw_user": "1", "age": 2, "sex": 2, "tags": [1, 2]},
                     {"user_id": 1, "raw_user": "2", "age": 1, "sex": 1, "tags": []},
                     {"user_id": 2, "raw_user": "3", "age": 0, "sex": 0, "tags": []}]
    items = pq.read_table(tmp_path / "d" / "items.parquet").to_pylist()
    assert [(r["raw_item"], r["title"], r["kind"]) for r in items] == [("m1", 1, [2, 3]), ("m2", 3, [1]),
                                                                      ("m3", 2, [])]
    assert schema.source["user_features"]["users_without_row"] == 1
    train = _split(tmp_path / "d", "train").to_pylist()
    assert train[0] == {"label": 1.0, "user_id": 0, "item_id": 0, "age": 2, "sex": 2, "tags": [1, 2],
                        "title": 1, "kind": [2, 3], "time": 0}
    assert train[-1]["user_id"] == 2 and train[-1]["age"] == 0 and train[-1]["tags"] == []
    batch = next(iter(ShardReader(tmp_path / "d", "train", load_schema(tmp_path / "d"), 4)))
    assert batch.sparse_features.keys() == [f.name for f in schema.sparse]
    assert batch.sparse_features["kind"].lengths().tolist() == [2, 0, 1, 2]  # m1, m3, m2, m1


def test_user_items_layout(tmp_path):
    src = tmp_path / "seq.txt"
    src.write_text("1 10 11 12\n2 11\n\n3  12 10 \n1 13\n")
    schema = convert_interactions([src], tmp_path / "d", "user", "item", layout="user-items",
                                  split="leave_last_out")
    assert schema.interactions["num_users"] == 3 and schema.interactions["num_items"] == 4
    assert _pairs(tmp_path / "d", "test") == [("1", "13")]
    assert _pairs(tmp_path / "d", "valid") == [("1", "12")]
    train = _split(tmp_path / "d", "train")
    assert _pairs(tmp_path / "d", "train") == [("1", "10"), ("1", "11"), ("2", "11"), ("3", "12"), ("3", "10")]
    assert train.column("time").to_pylist() == [0, 1, 3, 4, 5]  # positions in the whole input


def test_other_formats_sniffing_and_encoding(tmp_path):
    pq.write_table(pa.table({"u": [5, 6, 5], "i": [1, 1, 2]}), tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text('{"u": "7", "i": 2}\n{"u": "5", "i": 3}\n')  # text ids here
    with gzip.open(tmp_path / "c.data.gz", "wt") as f:
        f.write("u|i\n8|1\n")
    convert_interactions([tmp_path / "a.parquet", tmp_path / "b.jsonl", tmp_path / "c.data.gz"], tmp_path / "d",
                         "u", "i", split="leave_last_out")
    assert sorted(_all_pairs(tmp_path / "d")) == [("5", "1"), ("5", "2"), ("5", "3"), ("6", "1"), ("7", "2"), ("8", "1")]
    # A latin-1 tab-separated feature file given '\t' literally, as a shell passes it.
    (tmp_path / "log.tsv").write_text("u\ti\n1\tx\n")
    (tmp_path / "items.txt").write_bytes("x\tcafé\n".encode("latin-1"))
    convert_interactions([tmp_path / "log.tsv"], tmp_path / "e", "u", "i", delimiter="\\t", encoding="latin-1",
                         item_features=tmp_path / "items.txt", item_features_columns="id,name", item_key="id",
                         item_sparse="name")
    assert pq.read_table(tmp_path / "e" / "items.parquet").column("name").to_pylist() == [1]
    with pytest.raises(UserError, match=r"items\.txt.*--encoding"):
        convert_interactions([tmp_path / "log.tsv"], tmp_path / "f", "u", "i", item_features=tmp_path / "items.txt",
                             item_features_columns="id,name", item_key="id", item_sparse="name")


@pytest.mark.parametrize("kwargs, message", [
    ({"user": "usr"}, r"log\.csv: no column 'usr' \(--user\); the file has columns: user, item, rating"),
    ({"rating": "rating", "min_rating": 9}, r"no interactions left in .*log\.csv after filtering .*3 with rating < 9"),
    ({"item_flags": ["genres"]}, r"--item-flags 'genres': expected NAME=COL1,COL2"),
    ({"item_flags": ["genres=a,a"]}, r"--item-flags 'genres=a,a'"),
    ({"user_multi_hot": "tags:"}, r"--user-multi-hot 'tags:': expected COL:SEP"),
    ({"ratios": "0.8,0.1,0.2"}, r"--ratios '0.8,0.1,0.2': the fractions sum to 1.1, expected 1"),
    ({"ratios": "0.8,0.2"}, r"--ratios '0.8,0.2': expected three"),
    ({"split": "by_time"}, r"--split 'by_time': expected one of random, leave_last_out"),
    ({"rating": "rating"}, r"--rating COL and --min-rating R go together"),
    ({"user_features": "users.csv", "user_key": "id", "user_sparse": "user_id"}, r"feature name 'user_id' is reserved"),
    ({"item_features": "users.csv", "item_key": "id", "item_sparse": "neg_items"}, r"'neg_items' is reserved"),
    ({"item_features": "users.csv", "item_key": "id", "item_sparse": "hist_x"}, r"'hist_x' is reserved .*hist_\*"),
    ({"history": 2, "history_features": "age"}, r"--history-features 'age': not an item feature \(item features: none\)"),
    ({"category": "genre"}, r"--category 'genre': not an item feature \(item features: none\)"),
    ({"cold_items": 1.0}, r"--cold-items 1.0: expected a fraction"),
    ({"cold_users": -0.1}, r"--cold-users -0.1: expected a fraction of the users in \[0, 1\)"),
    ({"train_sequences": True}, r"--train-sequences writes each user's training sequence as a history: it needs "
                                r"--history N"),
])
def test_option_errors(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.chdir(tmp_path)
    _csv(tmp_path / "log.csv", "user,item,rating", [("u", "a", 4), ("u", "b", 5), ("v", "a", 3)])
    _csv(tmp_path / "users.csv", "id,user_id,neg_items,hist_x", [("u", 1, 2, 3)])
    args = {"user": "user", "item": "item", **kwargs}
    with pytest.raises(UserError, match=message):
        convert_interactions([tmp_path / "log.csv"], tmp_path / "d", args.pop("user"), args.pop("item"), **args)
    assert not (tmp_path / "d").exists()


def test_row_errors_name_file_line_and_column(tmp_path):
    src = _csv(tmp_path / "log.csv", "user,item,rating,ts", [("u", "a", 4, 1), ("u", "b", "five", 2)])
    with pytest.raises(UserError, match=r"log\.csv:3: rating 'five' \(column 'rating'\) is not a number"):
        convert_interactions([src], tmp_path / "d", "user", "item", rating="rating", min_rating=4)
    bad_time = _csv(tmp_path / "t.csv", "user,item,ts", [("u", "a", 1), ("u", "b", 2), ("v", "a", "soon")])
    with pytest.raises(UserError, match=r"t\.csv:4: time 'soon' \(column 'ts'\) is not a number or ISO 8601 time"):
        convert_interactions([bad_time], tmp_path / "d", "user", "item", time="ts")
    no_user = _csv(tmp_path / "n.csv", "user,item", [("u", "a"), ("", "b")])
    with pytest.raises(UserError, match=r"n\.csv:3: missing user id \(column 'user'\)"):
        convert_interactions([no_user], tmp_path / "d", "user", "item")
    (tmp_path / "items.csv").write_text("id,f0,f1\na,0,1\nb,2,0\n")
    with pytest.raises(UserError, match=r"items\.csv:3: flag column 'f0' of 'g' holds 2, expected 0 or 1"):
        convert_interactions([bad_time], tmp_path / "d", "user", "item", item_features=tmp_path / "items.csv",
                             item_key="id", item_flags="g=f0,f1")
    with pytest.raises(UserError, match=r"items\.csv: no column 'f9' \(--item-flags g\); the file has columns: id, f0, f1"):
        convert_interactions([bad_time], tmp_path / "d", "user", "item", item_features=tmp_path / "items.csv",
                             item_key="id", item_flags="g=f0,f9")


def test_output_folder_is_refused_without_overwrite(tmp_path):
    src = _csv(tmp_path / "log.csv", "user,item", [("u", "a"), ("v", "b")])
    convert_interactions([src], tmp_path / "d", "user", "item")
    with pytest.raises(UserError, match=r"output folder '.*d' already exists \(pass --overwrite"):
        convert_interactions([src], tmp_path / "d", "user", "item")
    schema = convert_interactions([src], tmp_path / "d", "user", "item", overwrite=True)
    assert load_schema(tmp_path / "d").to_json() == schema.to_json()


def test_command_line(tmp_path, capsys):
    src = _csv(tmp_path / "log.csv", "user,item", [("u", f"i{k}") for k in range(10)] + [("u", "i0")])
    out = tmp_path / "d"
    assert main(["convert", "interactions", "--input", str(src), "--user", "user", "--item", "item",
                 "--ratios", "0.6,0.2,0.2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "train 6 rows, valid 2 rows, test 2 rows; 1 users, 10 items" in printed
    assert "dropped 1 duplicate (user, item) pairs of 11 rows read" in printed
    assert json.loads((out / "schema.json").read_text())["source"]["options"]["ratios"] == [0.6, 0.2, 0.2]
    assert main(["convert", "interactions", "--input", str(src), "--user", "user", "--item", "item", "--header",
                 "maybe", "--out", str(tmp_path / "e")]) == 2
    assert "shardrec: error: --header 'maybe': expected true or false" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# The documented commands on the real samples.

GENRES = ",".join(f"g{k}" for k in range(19))
ML = "../shared/data/movielens_100k"
COMMANDS = {
    "ml100k": f"--input {ML}/u.data --columns user,item,rating,time --header false --user user --item item "
              f"--time time --user-features {ML}/u.user --user-features-columns user,age,gender,occupation,zip "
              f"--user-key user --user-sparse age,gender,occupation,zip --item-features {ML}/u.item "
              f"--item-features-columns item,title,release,video,url,{GENRES} --item-key item "
              f"--item-flags genres={GENRES} --encoding latin-1 --split random --seed 0",
    "video": "--input ../shared/data/amazon_video_games/Video.txt --columns user,item --header false "
             "--delimiter ' ' --user user --item item --split leave_last_out",
    "beauty": "--input ../shared/data/amazon_beauty/Beauty.txt --layout user-items --user user --item item "
              "--split leave_last_out",
}


@needs_shared
def test_documented_commands_on_the_shared_samples(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # ../shared is relative to the repository root
    out = {}
    for name, args in COMMANDS.items():
        assert main(["convert", "interactions", *shlex.split(args), "--out", str(tmp_path / name)]) == 0
        out[name] = load_schema(tmp_path / name)
    ml = out["ml100k"]
    assert (ml.interactions["num_users"], ml.interactions["num_items"]) == (943, 1682)
    assert sum(ml.splits.values()) == 100_000
    assert ml.splits == {"train": 80_808, "valid": 9_596, "test": 9_596}  # per-user floors favour train
    assert [f.name for f in ml.sparse] == ["user_id", "item_id", "age", "gender", "occupation", "zip", "genres"]
    assert ml.interactions["category"] == "genres" and ml.sparse[-1].num_embeddings == 20
    items = pq.read_table(tmp_path / "ml100k" / "items.parquet")
    toy_story = items.column("raw_item").to_pylist().index("1")
    assert items.column("genres")[toy_story].as_py() == [4, 5, 6]  # Animation, Children's, Comedy
    meta = pq.ParquetFile(tmp_path / "ml100k" / "train" / "part-00000.parquet").metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)][:-1] == [8192] * 9
    video = out["video"]
    assert (video.interactions["num_users"], video.interactions["num_items"]) == (31_013, 23_715)
    assert video.splits["test"] == video.splits["valid"] == 30_901 and sum(video.splits.values()) == 287_107
    test_users = _split(tmp_path / "video", "test").column("user_id").to_numpy()
    assert len(np.unique(test_users)) == len(test_users)  # one row per user
    beauty = out["beauty"]
    assert (beauty.interactions["num_users"], beauty.interactions["num_items"]) == (22_363, 12_101)
    assert sum(beauty.splits.values()) == 198_502 and beauty.splits["test"] == 22_363
    batch = next(iter(ShardReader(tmp_path / "ml100k", "train", ml, 256)))
    assert batch.sparse_features.keys() == ml.sparse_names
