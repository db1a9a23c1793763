"""`shardrec convert table`: any table -> a shardrec data set, on small hand-made tables whose
expected ids, labels and dense values are worked out by hand."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shardrec.data_pipeline.convert_table as ct
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.convert_table import convert_table, select_kth
from shardrec.data_pipeline.reader import ShardReader
from shardrec.data_pipeline.schema import load_schema
from shardrec.data_pipeline.table_transforms import TableTransforms, hash_strings

ROOT = Path(__file__).resolve().parents[2]
ALL_TRAIN = "1,0,0"  # every row in train, in input order


def _split(root: Path, split: str = "train") -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted((root / split).glob("*.parquet")))


def _csv(path: Path, text: str) -> Path:
    path.write_text(text.lstrip("\n"))
    return path


def _col(root: Path, name: str, split: str = "train") -> list:
    return _split(root, split).column(name).to_pylist()


CLICKS = """
id,clicked,price,user,item,genres
r1,1,10,u1,i9,a|b
r2,0,,u2,i9,
r3,1,3,u1,i2,b
r4,0,-2,u3,,a|c|
r5,true,7,u1,i9,c
r6,False,1,u2,i1,b|b
"""


def test_vocabulary_ids_by_descending_count_ties_by_value(tmp_path):
    src = _csv(tmp_path / "clicks.csv", CLICKS)
    schema = convert_table([src], tmp_path / "ds", label="clicked", sparse=["user", "item"], dense=["price"],
                           multi_hot=["genres:|"], split=ALL_TRAIN, workers=1)
    # user: u1 x3, u2 x2, u3 x1 -> 1, 2, 3. item: i9 x3, then i1 and i2 once each (tie: by value), r4 empty -> 0.
    assert _col(tmp_path / "ds", "user") == [1, 2, 1, 3, 1, 2]
    assert _col(tmp_path / "ds", "item") == [1, 1, 3, 0, 1, 2]
    # genres tokens: b x4, a x2, c x2 -> b 1, a 2, c 3; an empty value is an empty list, empty tokens drop.
    assert _col(tmp_path / "ds", "genres") == [[2, 1], [], [1], [2, 3], [3], [1, 1]]
    assert _col(tmp_path / "ds", "clicked") == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert {f.name: f.num_embeddings for f in schema.sparse} == {"user": 4, "item": 4, "genres": 4}
    assert [f.multi_hot for f in schema.sparse] == [False, False, True]
    vocab = pq.read_table(tmp_path / "ds" / "vocab" / "item.parquet").to_pylist()
    assert vocab == [{"value": "i9", "count": 3}, {"value": "i1", "count": 1}, {"value": "i2", "count": 1}]
    t = _split(tmp_path / "ds")
    assert t.schema.field("genres").type == pa.list_(pa.int64()) and t.schema.field("price").type == pa.float32()
    assert t.schema.field("clicked").type == pa.float32() and t.schema.field("user").type == pa.int64()
    saved = json.loads((tmp_path / "ds" / "transforms.json").read_text())
    assert saved["sparse"][0]["vocab_file"] == "vocab/user.parquet" and saved["sparse"][0]["num_embeddings"] == 4


def test_min_count_and_max_vocab(tmp_path):
    src = _csv(tmp_path / "clicks.csv", CLICKS)
    convert_table([src], tmp_path / "mc", label="clicked", sparse=["user"], split=ALL_TRAIN, min_count=2, workers=1)
    assert _col(tmp_path / "mc", "user") == [1, 2, 1, 0, 1, 2]  # u3 seen once: out of vocabulary
    schema = convert_table([src], tmp_path / "mv", label="clicked", split=ALL_TRAIN, workers=1,
                           sparse=[{"name": "user", "max_vocab": 1}, {"name": "item", "min_count": 3}])
    assert _col(tmp_path / "mv", "user") == [1, 0, 1, 0, 1, 0]
    assert _col(tmp_path / "mv", "item") == [1, 1, 0, 0, 1, 0]
    assert [f.num_embeddings for f in schema.sparse] == [2, 2]


def test_hashing_is_stable_and_in_range(tmp_path):
    # The hash is part of the data set format: these values must never change.
    h = hash_strings(pa.array(["", "a", "abcdefgh", "abcdefghi", "a much longer value than sixteen bytes"]))
    assert h.tolist() == [7175312947680778460, 16881135045469041520, 13357883359731610939,
                          381721033303925106, 2958240163645521591]
    # Sliced arrays, large strings and dictionaries hash the same values the same way.
    values = pa.array(["x", "user_12345678901", "b", None, "user_12345678901"])
    assert hash_strings(values.slice(1, 2)).tolist() == hash_strings(pa.array(["user_12345678901", "b"])).tolist()
    assert hash_strings(values.cast(pa.large_string())).tolist() == hash_strings(values).tolist()
    rows = "\n".join(f"{i % 2},user{i % 50},{i % 7}" for i in range(400))
    src = _csv(tmp_path / "h.csv", "label,user,n\n" + rows + "\n,,\n".replace(",,", "1,,"))
    schema = convert_table([src], tmp_path / "h1", label="label", sparse=["user", "n"], hash_buckets=10,
                           split=ALL_TRAIN, workers=1)
    assert [f.num_embeddings for f in schema.sparse] == [10, 10]
    user = _col(tmp_path / "h1", "user")
    assert user[-1] == 0 and all(1 <= u < 10 for u in user[:-1])  # 0 only for the missing value
    assert len({(f"user{i % 50}", u) for i, u in enumerate(user[:-1])}) == 50  # one id per value
    expected = 1 + hash_strings(pa.array([f"user{i % 50}" for i in range(400)])) % np.uint64(9)
    assert user[:-1] == expected.astype(np.int64).tolist()
    # Per-column buckets (a spec's {name, hash_buckets}), mixed with a vocabulary column.
    schema = convert_table([src], tmp_path / "h2", label="label", split=ALL_TRAIN, workers=1,
                           sparse=[{"name": "user", "hash_buckets": 1000}, "n"])
    assert [f.num_embeddings for f in schema.sparse] == [1000, 8]
    assert _col(tmp_path / "h2", "user")[:-1] == (1 + hash_strings(pa.array([f"user{i % 50}" for i in range(400)]))
                                                  % np.uint64(999)).astype(np.int64).tolist()


def test_label_threshold_dense_transforms_and_kept_columns(tmp_path):
    src = _csv(tmp_path / "r.csv", """
row,rating,age,spend,score
a,4,20,,1
b,3.5,NA,-5,2
c,5, 40 ,100,3
d,1,,0,4
""")
    schema = convert_table([src], tmp_path / "ds", label="rating", label_threshold=4, keep=["row"], split=ALL_TRAIN,
                           dense=["age", {"name": "spend", "transform": "log1p"}, "score"],
                           dense_transform="score:standardize", dense_fill="age:-1", workers=1)
    t = _split(tmp_path / "ds")
    assert t.column("rating").to_pylist() == [1.0, 0.0, 1.0, 0.0]  # rating >= 4
    assert t.column("age").to_pylist() == [20.0, -1.0, 40.0, -1.0]  # NA and empty -> fill; " 40 " is 40
    np.testing.assert_allclose(t.column("spend").to_numpy(), [0.0, 0.0, np.log1p(100), 0.0], rtol=1e-6)
    mean, std = 2.5, np.sqrt(1.25)
    np.testing.assert_allclose(t.column("score").to_numpy(), (np.arange(1, 5) - mean) / std, rtol=1e-6)
    assert t.column("row").to_pylist() == ["a", "b", "c", "d"]  # kept unchanged ...
    assert "row" not in schema.dense and "row" not in schema.sparse_names  # ... but not a feature
    rows = sum(len(b.labels) for b in ShardReader(tmp_path / "ds", "train", schema, 2, drop_last=False))
    assert rows == 4  # the reader ignores the extra column


def test_standardize_uses_train_statistics_only(tmp_path):
    train = _csv(tmp_path / "train.csv", "y,x\n1,1\n0,3\n")
    test = _csv(tmp_path / "test.csv", "y,x\n1,100\n0,\n")
    transforms = {"name": "x", "transform": "standardize", "fill": 0.5}
    convert_table([train, test], tmp_path / "ds", label="y", dense=[transforms], test_files=["test"], workers=1)
    assert _col(tmp_path / "ds", "x") == [-1.0, 1.0]  # mean 2, std 1 from the train rows
    assert _col(tmp_path / "ds", "x", "test") == [98.0, 0.5]  # (100 - 2) / 1; missing -> fill
    saved = TableTransforms.load(tmp_path / "ds")
    assert (saved.dense[0].mean, saved.dense[0].std) == (2.0, 1.0)


def _table_rows(n: int = 300) -> list[dict]:
    return [{"id": f"r{i}", "y": i % 3 == 0, "price": None if i % 7 == 0 else i * 0.5, "user": f"u{i % 13}",
             "tags": "|".join(f"t{(i + k) % 5}" for k in range(i % 3)), "ts": 1000 + i} for i in range(n)]


def _write_formats(folder: Path, rows: list[dict]) -> dict[str, Path]:
    def text(v) -> str:
        return "" if v is None else ("true" if v is True else "false" if v is False else str(v))

    folder.mkdir()
    cols = list(rows[0])
    csv = ",".join(cols) + "\n" + "".join(",".join(text(r[c]) for c in cols) + "\n" for r in rows)
    out = {"csv": folder / "t.csv", "tsv": folder / "t.tsv", "jsonl": folder / "t.jsonl",
           "parquet": folder / "t.parquet", "csv.gz": folder / "t.csv.gz", "jsonl.gz": folder / "tz.jsonl.gz"}
    out["csv"].write_text(csv)
    out["tsv"].write_text(csv.replace(",", "\t"))
    jsonl = "".join(json.dumps(r) + "\n" for r in rows)
    out["jsonl"].write_text(jsonl)
    pq.write_table(pa.Table.from_pylist(rows), out["parquet"], row_group_size=70)
    with gzip.open(out["csv.gz"], "wt") as f:
        f.write(csv)
    with gzip.open(out["jsonl.gz"], "wt") as f:
        f.write(jsonl)
    return out


def test_every_input_format_gives_the_same_output(tmp_path):
    files = _write_formats(tmp_path / "in", _table_rows())
    tables = {}
    for kind, path in files.items():
        convert_table([path], tmp_path / kind, label="y", sparse=["user"], dense=["price"], multi_hot=["tags:|"],
                      keep=["id"], split=ALL_TRAIN, workers=1, chunk_bytes=2048)
        tables[kind] = _split(tmp_path / kind)
    for kind, table in tables.items():
        assert table.equals(tables["csv"]), kind
    assert tables["csv"].num_rows == 300
    assert tables["csv"].column("price").to_pylist()[:2] == [0.0, 0.5]


def test_ratio_split_is_deterministic_with_the_right_proportions(tmp_path):
    rows = "".join(f"{i % 2},u{i % 97},{i}\n" for i in range(4000))
    src = _csv(tmp_path / "big.csv", "y,user,x\n" + rows)
    args = dict(label="y", sparse=["user"], dense=["x"], split="0.7,0.2,0.1", chunk_bytes=8 << 10)
    one = convert_table([src], tmp_path / "one", seed=5, workers=1, **args)
    two = convert_table([src], tmp_path / "two", seed=5, workers=2, **args)
    convert_table([src], tmp_path / "other", seed=6, workers=1, **args)
    assert one.splits == two.splits and sum(one.splits.values()) == 4000
    for split, frac in (("train", 0.7), ("valid", 0.2), ("test", 0.1)):
        assert abs(one.splits[split] / 4000 - frac) < 0.03
        files = sorted(p.name for p in (tmp_path / "one" / split).glob("*.parquet"))
        assert len(files) > 1  # several tasks
        for name in files:  # --workers 1 and 2: byte-identical files
            assert (tmp_path / "one" / split / name).read_bytes() == (tmp_path / "two" / split / name).read_bytes()
    assert _col(tmp_path / "one", "x", "test") != _col(tmp_path / "other", "x", "test")
    # every row exactly once, rows in input order within each split
    xs = sorted(x for s in ("train", "valid", "test") for x in _col(tmp_path / "one", "x", s))
    assert xs == list(range(4000))
    assert _col(tmp_path / "one", "x", "valid") == sorted(_col(tmp_path / "one", "x", "valid"))


def test_time_split_puts_the_latest_rows_in_test(tmp_path, monkeypatch):
    rows = "".join(f"{i % 2},{(i * 7919) % 1000},{(i * 7919) % 1000 + 5000}\n" for i in range(1000))
    src = _csv(tmp_path / "t.csv", "y,id,ts\n" + rows)
    monkeypatch.setattr(ct, "_SELECT_IN_MEMORY", 10)  # exercise the radix rounds on this small input
    schema = convert_table([src], tmp_path / "ds", label="y", dense=["id"], time_column="ts",
                           split="0.8,0.15,0.05", workers=1, chunk_bytes=4 << 10)
    assert schema.splits == {"train": 800, "valid": 150, "test": 50}
    assert sorted(_col(tmp_path / "ds", "id", "test")) == list(range(950, 1000))
    assert sorted(_col(tmp_path / "ds", "id", "valid")) == list(range(800, 950))
    assert schema.source["split"]["test_from"] == 5950.0 and schema.source["split"]["valid_from"] == 5800.0
    # ISO 8601 times work too; ties at the cut go to the later split.
    src = _csv(tmp_path / "iso.csv", "y,u,when\n" + "".join(
        f"{i % 2},u{i},2024-01-{1 + i // 10:02d} 10:00:00\n" for i in range(100)))
    schema = convert_table([src], tmp_path / "iso", label="y", sparse=["u"], time_column="when", split="0.8,0.1,0.1",
                           workers=1)
    assert schema.splits == {"train": 80, "valid": 10, "test": 10}
    assert _col(tmp_path / "iso", "u", "test") == [0] * 10  # u90..u99 never appear in train


def test_split_by_files(tmp_path):
    a = _csv(tmp_path / "day1.csv", "y,u\n1,a\n0,b\n")
    b = _csv(tmp_path / "day2.csv", "y,u\n1,b\n")
    c = _csv(tmp_path / "day3.csv", "y,u\n0,c\n")
    schema = convert_table([a, b, c], tmp_path / "ds", label="y", sparse=["u"], train_files=["day1"],
                           valid_files=["day2.csv"], test_files=[str(c)], workers=1)
    assert schema.splits == {"train": 2, "valid": 1, "test": 1}
    assert _col(tmp_path / "ds", "u", "test") == [0]  # c is not in the train vocabulary
    with pytest.raises(UserError, match="named by none of --train-files"):
        convert_table([a, b, c], tmp_path / "x", label="y", sparse=["u"], train_files=["day1"], test_files=["day3"])
    with pytest.raises(UserError, match="exclude --split"):
        convert_table([a, b], tmp_path / "x", label="y", sparse=["u"], test_files=["day2"], split="0.5,0.5,0")


def test_malformed_rows_name_file_and_line(tmp_path):
    good = "".join(f"{i % 2},u{i},{i}\n" for i in range(300))
    src = _csv(tmp_path / "m.csv", "y,u,x\n" + good + "1,u,2,extra\n" + good)
    with pytest.raises(UserError, match=r"m\.csv:302: expected 3 fields, found 4"):
        convert_table([src], tmp_path / "o", label="y", sparse=["u"], dense=["x"], workers=1, chunk_bytes=1 << 10)
    src = _csv(tmp_path / "d.csv", "y,u,x\n" + good + "1,u,abc\n")
    with pytest.raises(UserError, match=r"d\.csv:302: dense column 'x': value 'abc' is not a number"):
        convert_table([src], tmp_path / "o", label="y", sparse=["u"], dense=["x"], workers=1, chunk_bytes=1 << 10)
    src = _csv(tmp_path / "l.csv", "y,u\n1,a\n\n2,b\n")
    with pytest.raises(UserError, match=r"l\.csv:4: label column 'y': value '2' is not 0/1 or true/false"):
        convert_table([src], tmp_path / "o", label="y", sparse=["u"], workers=1)
    src = tmp_path / "j.jsonl"
    src.write_text('{"y": 1, "u": "a"}\n{"y": 0, "u": "b"\n{"y": 1, "u": "c"}\n')
    with pytest.raises(UserError, match=r"j\.jsonl:2: not a valid JSON object line"):
        convert_table([src], tmp_path / "o", label="y", sparse=["u"], workers=1)
    pq.write_table(pa.table({"y": [0, 1, 5], "u": ["a", "b", "c"]}), tmp_path / "p.parquet")
    with pytest.raises(UserError, match=r"p\.parquet: row 3: label column 'y': value 5 is not 0/1"):
        convert_table([tmp_path / "p.parquet"], tmp_path / "o", label="y", sparse=["u"], workers=1)
    assert not (tmp_path / "o").exists()


def test_text_beyond_ascii_is_kept_and_invalid_utf8_names_its_line(tmp_path):
    # Chunks of plain ASCII are parsed without Arrow's UTF-8 check (it cannot fail there);
    # any other chunk keeps it. Small chunks put the two kinds of chunk in one file.
    ascii_rows = "".join(f"{i % 2},u{i % 7},g{i % 3}|h\n" for i in range(200))
    text = "y,u,tags\n" + ascii_rows + "1,café,ü|h\n0,naïve,ü\n" + ascii_rows
    src = tmp_path / "utf8.csv"
    src.write_bytes(text.encode("utf-8"))
    convert_table([src], tmp_path / "ok", label="y", sparse=["u"], multi_hot=["tags:|"], split=ALL_TRAIN,
                  workers=1, chunk_bytes=1 << 10)
    users = pq.read_table(tmp_path / "ok" / "vocab" / "u.parquet").column("value").to_pylist()
    tags = pq.read_table(tmp_path / "ok" / "vocab" / "tags.parquet").column("value").to_pylist()
    assert {"café", "naïve"} <= set(users) and "ü" in tags
    ids = {v: i + 1 for i, v in enumerate(users)}
    assert _col(tmp_path / "ok", "u")[200:202] == [ids["café"], ids["naïve"]]

    bad = tmp_path / "latin1.csv"  # line 1 the header, 2-201 ASCII, 202 a blank line, 203 Latin-1
    bad.write_bytes(("y,u,tags\n" + ascii_rows + "\n").encode() + "1,café,x\n".encode("latin-1")
                    + ascii_rows.encode())
    with pytest.raises(UserError, match=r"latin1\.csv:203: column 'u' is not valid UTF-8 text \(re-encode"):
        convert_table([bad], tmp_path / "o", label="y", sparse=["u"], multi_hot=["tags:|"], workers=1,
                      chunk_bytes=1 << 10)
    assert not (tmp_path / "o").exists()


def test_on_error_skip_counts_and_saves(tmp_path):
    src = _csv(tmp_path / "s.csv", "y,u,x\n1,a,1\n1,a\n7,b,2\n0,b,zz\n0,c,3\n\n1,c,4\n")
    schema = convert_table([src], tmp_path / "ds", label="y", sparse=["u"], dense=["x"], split=ALL_TRAIN,
                           on_error="skip", workers=1)
    assert schema.splits == {"train": 3}
    assert schema.source["skipped_rows"] == 3
    assert schema.source["skipped"] == {"wrong_field_count": 1, "bad_label": 1, "bad_dense": 1}
    assert _col(tmp_path / "ds", "x") == [1.0, 3.0, 4.0]
    assert _col(tmp_path / "ds", "u") == [2, 1, 1]  # b only in skipped rows: not counted (c 2, a 1)
    proc = subprocess.run([sys.executable, "-m", "shardrec", "convert", "table", "--input", str(src), "--out",
                           str(tmp_path / "cli"), "--label", "y", "--sparse", "u", "--dense", "x", "--on-error", "skip",
                           "--workers", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 3 malformed rows of 6 (wrong_field_count 1, bad_label 1, bad_dense 1)" in proc.stdout


def test_unknown_column_lists_the_columns(tmp_path):
    src = _csv(tmp_path / "c.csv", "y,user,item\n1,a,b\n")
    with pytest.raises(UserError, match=r"c\.csv: no column 'usr' \(--sparse\); the file has columns: y, user, item"):
        convert_table([src], tmp_path / "o", label="y", sparse=["usr"])
    with pytest.raises(UserError, match="given twice"):
        convert_table([src], tmp_path / "o", label="y", sparse=["user"], dense=["user"])


def test_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch):
    src = _csv(tmp_path / "c.csv", "y,u\n" + "".join(f"{i % 2},u{i}\n" for i in range(500)))

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(ct, "_encode_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_table([src], tmp_path / "out", label="y", sparse=["u"], workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv"]


def test_existing_output_needs_overwrite(tmp_path):
    src = _csv(tmp_path / "c.csv", "y,u\n1,a\n0,b\n")
    convert_table([src], tmp_path / "out", label="y", sparse=["u"], split=ALL_TRAIN, workers=1)
    with pytest.raises(UserError, match="already exists"):
        convert_table([src], tmp_path / "out", label="y", sparse=["u"], workers=1)
    convert_table([src], tmp_path / "out", label="y", sparse=["u"], hash_buckets=5, split=ALL_TRAIN, workers=1,
                  overwrite=True)
    assert load_schema(tmp_path / "out").sparse[0].num_embeddings == 5
    hashed = (1 + hash_strings(pa.array(["a", "b"])) % np.uint64(4)).astype(np.int64).tolist()
    assert _col(tmp_path / "out", "u") == hashed  # the new conversion's ids, not the first one's


def test_apply_on_raw_rows_equals_what_was_written(tmp_path):
    src = _csv(tmp_path / "raw.csv", """
id,y,price,user,tags,when
1,1,10,u1,a|b,3
2,0,NA,u2,,1
3,1, 3 ,u1,b,2
4,0,-2,u9,a|c|,5
5,1,1e3,,c,4
""")
    convert_table([src], tmp_path / "ds", label="y", sparse=["user"], dense=[{"name": "price", "transform": "log1p"}],
                  multi_hot=["tags:|"], keep=["id"], split=ALL_TRAIN, min_count=2, workers=1)
    transforms = TableTransforms.load(tmp_path / "ds")
    batches = list(transforms.read([src]))
    applied = pa.concat_tables(transforms.apply(b) for b in batches)
    assert applied.equals(_split(tmp_path / "ds"))
    # Rows without the label (prediction inputs) get the features and kept columns only.
    unlabeled = batches[0].drop_columns(["y"])
    out = transforms.apply(unlabeled)
    assert out.column_names == ["price", "user", "tags", "id"]
    assert out.column("user").to_pylist() == [1, 0, 1, 0, 0]  # u2, u9, missing: not in the vocabulary
    empty_label = unlabeled.append_column("y", pa.nulls(5, pa.string()))  # a CSV's empty label column
    assert transforms.apply(empty_label).column_names == ["price", "user", "tags", "id"]
    with pytest.raises(UserError, match="row 1: dense column 'price': value 'x' is not a number"):
        transforms.apply(pa.table({"price": ["1", "x"], "user": ["u1", "u1"], "tags": ["", ""]}))
    with pytest.raises(UserError, match="no column 'user'"):
        transforms.apply(pa.table({"price": [1.0], "tags": ["a"]}))


def test_cli_spec_and_flags(tmp_path):
    src = _csv(tmp_path / "c.csv", CLICKS)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""
input: {src}
out: {tmp_path / "from_spec"}
label: clicked
sparse:
  - name: user
    hash_buckets: 100
  - item
dense: [price]
multi_hot: ["genres:|"]
keep: id
split: [1, 0, 0]
workers: 1
""")
    proc = subprocess.run([sys.executable, "-m", "shardrec", "convert", "table", "--spec", str(spec),
                           "--sparse", "user", "--sparse", "item", "--min-count", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    schema = load_schema(tmp_path / "from_spec")
    assert [(f.name, f.num_embeddings) for f in schema.sparse] == [("user", 3), ("item", 2), ("genres", 4)]
    assert "id" in _split(tmp_path / "from_spec").column_names
    bad = subprocess.run([sys.executable, "-m", "shardrec", "convert", "table", "--input", str(src), "--out",
                          str(tmp_path / "x"), "--label", "clicked", "--sparse", "nope"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no column 'nope' (--sparse)" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    helptext = subprocess.run([sys.executable, "-m", "shardrec", "convert", "table", "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60).stdout
    for flag in ("--input", "--out", "--label", "--label-threshold", "--label-positive", "--sparse", "--dense", "--multi-hot", "--keep",
                 "--spec", "--format", "--delimiter", "--no-header", "--columns", "--split", "--seed",
                 "--time-column", "--train-files", "--valid-files", "--test-files", "--min-count", "--max-vocab",
                 "--hash-buckets", "--dense-fill", "--dense-transform", "--workers", "--on-error", "--overwrite"):
        assert flag in helptext, flag
    assert "clamped to 0" in helptext


def test_headerless_input_and_delimiter(tmp_path):
    src = _csv(tmp_path / "x.txt", "1;a;2\n0;b;3\n")
    convert_table([src], tmp_path / "ds", label="y", sparse=["u"], dense=["v"], format="csv", delimiter=";",
                  header=False, columns="y,u,v", split=ALL_TRAIN, workers=1)
    assert _col(tmp_path / "ds", "v") == [2.0, 3.0]
    with pytest.raises(UserError, match="cannot tell the format"):
        convert_table([src], tmp_path / "o", label="y", sparse=["u"])


def test_radix_selection_matches_sorting(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1e6, 5000), np.full(300, 7.0), -np.abs(rng.normal(0, 1, 200))])
    files = []
    for i, part in enumerate(np.array_split(values, 3)):
        files.append(str(tmp_path / f"t{i}.f64"))
        part.astype(np.float64).tofile(files[-1])
    monkeypatch.setattr(ct, "_SELECT_IN_MEMORY", 50)
    monkeypatch.setattr(ct, "_BLOCK", 1000)
    ordered = np.sort(values)
    for k in (0, 1, 2500, 4999, 5100, len(values) - 1):
        assert select_kth(files, k) == ordered[k]


def test_the_reader_reads_the_converted_data(tmp_path):
    files = _write_formats(tmp_path / "in", _table_rows(600))
    schema = convert_table([files["parquet"]], tmp_path / "ds", label="y", sparse=["user"], multi_hot=["tags:|"],
                           dense=[{"name": "price", "transform": "standardize"}], keep=["id", "ts"], workers=1)
    assert sum(schema.splits.values()) == 600 and set(schema.splits) == {"train", "valid", "test"}
    for split in schema.splits:
        table = _split(tmp_path / "ds", split)
        batches = list(ShardReader(tmp_path / "ds", split, schema, 64, drop_last=False))
        assert sum(len(b.labels) for b in batches) == schema.splits[split]
        np.testing.assert_array_equal(np.concatenate([b.labels.numpy() for b in batches]),
                                      table.column("y").to_numpy())
        np.testing.assert_array_equal(np.concatenate([b.dense_features[:, 0].numpy() for b in batches]),
                                      table.column("price").to_numpy())
        tags = [v for b in batches for v in b.sparse_features.to_dict()["tags"].values().tolist()]
        assert tags == [v for bag in table.column("tags").to_pylist() for v in bag]
    train = _split(tmp_path / "ds")
    present = np.array([int(i[1:]) % 7 != 0 for i in train.column("id").to_pylist()])  # price None: filled 0
    price = train.column("price").to_numpy()
    assert abs(price[present].mean()) < 1e-5 and abs(price[present].std() - 1) < 1e-4  # standardized on train
    assert (price[~present] == 0).all() and train.column("ts").type == pa.int64()  # kept: Parquet's type


def test_label_positive_names_the_positive_values(tmp_path):
    src = _csv(tmp_path / "a.csv", "income,job\n>50K,x\n<=50K,y\n >50K ,x\n<=50K,x\n")
    convert_table([src], tmp_path / "ds", label="income", label_positive=">50K", sparse=["job"], split=ALL_TRAIN,
                  workers=1)
    assert _col(tmp_path / "ds", "income") == [1.0, 0.0, 1.0, 0.0]
    transforms = TableTransforms.load(tmp_path / "ds")
    assert transforms.apply(next(transforms.read([src]))).equals(_split(tmp_path / "ds"))
    with pytest.raises(UserError, match="excludes --label-threshold"):
        convert_table([src], tmp_path / "x", label="income", label_positive=">50K", label_threshold=1, sparse=["job"])


SAMPLES = ROOT / "tests" / "data"


@pytest.mark.skipif(not (SAMPLES / "adult_sample.csv").is_file(), reason="tests/data samples not present")
def test_public_table_samples_convert_and_read(tmp_path):
    adult = convert_table(
        [SAMPLES / "adult_sample.csv"], tmp_path / "adult", label="income", label_positive=">50K", workers=1,
        dense=[{"name": c, "transform": "standardize"} for c in ("age", "fnlwgt", "educational-num", "capital-gain",
                                                                  "capital-loss", "hours-per-week")],
        sparse=["workclass", "education", "marital-status", "occupation", "relationship", "race", "gender",
                "native-country"])
    assert sum(adult.splits.values()) == 3000 and adult.source["skipped_rows"] == 0
    assert 0.15 < _split(tmp_path / "adult").column("income").to_numpy().mean() < 0.35  # about 24% earn >50K
    reviews = SAMPLES / "womens_clothing_reviews_sample.csv"
    if reviews.is_file():
        schema = convert_table([reviews], tmp_path / "reviews", label="Recommended IND", workers=1,
                               dense=["Age", {"name": "Positive Feedback Count", "transform": "log1p"}],
                               sparse=["Clothing ID", "Division Name", "Department Name", "Class Name", "Rating"])
        assert sum(schema.splits.values()) == 2000
        for root, s in ((tmp_path / "adult", adult), (tmp_path / "reviews", schema)):
            assert sum(len(b.labels) for b in ShardReader(root, "train", s, 256, drop_last=False)) == s.splits["train"]


def test_quoted_line_breaks_need_the_flag_and_then_convert_like_pyarrow_reads_them(tmp_path):
    """Review texts hold line breaks inside quotes: refused with the flag to pass, and with
    --newlines-in-values read record by record, also across the pieces a file is read in."""
    import pyarrow.csv as pcsv
    from shardrec.configs.errors import UserError
    from shardrec.data_pipeline.convert_table import convert_table

    rows = [f'{i % 2},item{i % 7},"line one\nline ""two"" of review {i}\n",{i % 3}' for i in range(300)]
    path = tmp_path / "reviews.csv"
    path.write_text("label,item,text,shop\n" + "\n".join(rows) + "\n")
    with pytest.raises(UserError, match="pass --newlines-in-values"):
        convert_table([path], tmp_path / "refused", "label", sparse=["item", "shop"], keep=["text"], split="1,0,0")
    convert_table([path], tmp_path / "ds", "label", sparse=["item", "shop"], keep=["text"], split="1,0,0",
                  newlines_in_values=True, chunk_bytes=997)  # pieces end inside quoted fields
    got = pq.read_table(tmp_path / "ds" / "train").sort_by([("text", "ascending")])
    want = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(newlines_in_values=True)).sort_by(
        [("text", "ascending")])
    assert got.num_rows == 300
    assert got.column("text").to_pylist() == want.column("text").to_pylist()
    assert got.column("label").to_pylist() == [float(v) for v in want.column("label").to_pylist()]
