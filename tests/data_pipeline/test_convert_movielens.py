"""MovieLens -> shardrec data set: the real 100K files (read in place) and a hand-made 1M folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.convert_movielens import GENRES, convert_movielens
from shardrec.data_pipeline.reader import ShardReader
from shardrec.data_pipeline.schema import load_schema

ML100K = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "movielens_100k"
needs_100k = pytest.mark.skipif(not (ML100K / "u.data").is_file(),
                                reason=f"MovieLens 100K sample not found at {ML100K} (../shared/data is CI-only)")


def _all_rows(root: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(root.glob("*/*.parquet")))


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    out = tmp_path_factory.mktemp("ml") / "ml100k"
    schema = convert_movielens(ML100K, out, seed=0)
    return out, schema


@needs_100k
def test_100k_rows_splits_and_schema(ml100k):
    out, schema = ml100k
    assert load_schema(out).to_json() == schema.to_json()
    assert schema.splits == {"train": 80_000, "valid": 10_000, "test": 10_000}
    assert [f.name for f in schema.sparse if f.multi_hot] == ["genres"]
    assert schema.sequences == [] and "history" not in schema.source  # no --history: no hist_item_id
    assert schema.dense == ["user_age", "rating_time"]
    table = _all_rows(out)
    assert table.num_rows == 100_000
    sizes = {f.name: f.num_embeddings for f in schema.sparse}
    assert sizes["user_id"] == 944 and sizes["item_id"] == 1683 and sizes["genres"] == len(GENRES) == 19
    for f in schema.sparse:
        col = table.column(f.name)
        values = (col.combine_chunks().flatten() if f.multi_hot else col).to_numpy()
        assert values.min() >= 0 and values.max() < f.num_embeddings, f.name


@needs_100k
def test_100k_label_rate_matches_u_data(ml100k):
    out, schema = ml100k
    ratings = np.loadtxt(ML100K / "u.data", dtype=np.int64)
    want = float((ratings[:, 2] >= 4).mean())
    got = _all_rows(out).column("label").to_numpy()
    assert got.mean() == pytest.approx(want, abs=1e-12)
    assert schema.source["label_rate"] == pytest.approx(want)


@needs_100k
def test_100k_known_movies_and_users(ml100k):
    out, _ = ml100k
    table = _all_rows(out)
    items = table.column("item_id").to_numpy()
    genres = table.column("genres").to_pylist()
    names = lambda ids: [GENRES[g] for g in ids]  # noqa: E731
    first = {}
    for i, g in zip(items.tolist(), genres):
        first.setdefault(i, g)
    # u.item: 1 Toy Story = Animation|Children's|Comedy; 2 GoldenEye = Action|Adventure|Thriller;
    # 267 has only the 'unknown' flag.
    assert names(first[1]) == ["Animation", "Children's", "Comedy"]
    assert names(first[2]) == ["Action", "Adventure", "Thriller"]
    assert names(first[267]) == ["unknown"]
    # every row of a movie carries that movie's flags from u.item
    flags = {}
    for line in (ML100K / "u.item").read_text(encoding="latin-1").splitlines():
        f = line.split("|")
        flags[int(f[0])] = [g for g, x in enumerate(f[5:24]) if x == "1"]
    assert all(g == flags[i] for i, g in zip(items.tolist(), genres))
    # user 1: 24, M, technician, zip 85711 -> bucket 18-24 (2), gender 1, user_age 0.24
    rows = table.filter(pa.compute.equal(table.column("user_id"), 1)).slice(0, 1).to_pylist()[0]
    assert (rows["age_bucket"], rows["gender"]) == (2, 1)
    assert rows["user_age"] == pytest.approx(0.24)


@needs_100k
def test_100k_reader_batches_and_seeded_split(ml100k, tmp_path):
    out, schema = ml100k
    batch = next(iter(ShardReader(out, "train", schema, 512)))
    assert batch.dense_features.shape == (512, 2)
    assert batch.sparse_features.keys() == schema.sparse_names
    again = convert_movielens(ML100K, tmp_path / "again", seed=0)
    other = convert_movielens(ML100K, tmp_path / "other", seed=1)
    assert again.splits == other.splits
    a = pq.read_table(out / "test").column("user_id").to_numpy()
    assert np.array_equal(a, pq.read_table(tmp_path / "again" / "test").column("user_id").to_numpy())
    assert not np.array_equal(a, pq.read_table(tmp_path / "other" / "test").column("user_id").to_numpy())


def _write_1m(root: Path) -> None:
    root.mkdir()
    (root / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117-1234\n",
                                    encoding="latin-1")
    (root / "movies.dat").write_text(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "2::Jumanji (1995)::Adventure|Children's|Fantasy\n"
        "3::Misérables, Les (1935)::Drama\n", encoding="latin-1")
    ratings = [(u, m, (u + m) % 5 + 1, 978300000 + 10 * (u * 3 + m)) for u in (1, 2, 3) for m in (1, 2, 3)]
    (root / "ratings.dat").write_text("".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in ratings * 3),
                                      encoding="latin-1")


def test_1m_format(tmp_path):
    _write_1m(tmp_path / "ml1m")
    schema = convert_movielens(tmp_path / "ml1m", tmp_path / "out", split=(0.6, 0.2, 0.2))
    assert schema.source["variant"] == "1m"
    assert sum(schema.splits.values()) == 27
    table = _all_rows(tmp_path / "out")
    by_item = {r["item_id"]: r for r in table.to_pylist()}
    assert [GENRES[g] for g in by_item[2]["genres"]] == ["Adventure", "Children's", "Fantasy"]
    assert by_item[3]["release_year"] == 1 and by_item[1]["release_year"] == 2  # 1935 < 1995
    by_user = {r["user_id"]: r for r in table.to_pylist()}
    assert (by_user[1]["gender"], by_user[1]["age_bucket"], by_user[1]["occupation"]) == (2, 1, 11)
    assert by_user[2]["age_bucket"] == 7 and by_user[2]["user_age"] == pytest.approx(0.56)
    labels = table.column("label").to_numpy()
    assert labels.mean() == pytest.approx(np.mean([(u + m) % 5 + 1 >= 4 for u in (1, 2, 3) for m in (1, 2, 3)]))


def test_1m_bad_line_names_file_and_line(tmp_path):
    _write_1m(tmp_path / "ml1m")
    with open(tmp_path / "ml1m" / "ratings.dat", "a") as f:
        f.write("1::x::4::978300000\n")
    with pytest.raises(UserError, match=r"ratings\.dat:28: movie id 'x' is not an integer"):
        convert_movielens(tmp_path / "ml1m", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ml1m"]


def test_missing_folder_and_existing_output(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        convert_movielens(tmp_path / "nowhere", tmp_path / "out")
    _write_1m(tmp_path / "ml1m")
    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match="--overwrite"):
        convert_movielens(tmp_path / "ml1m", tmp_path / "out")
    convert_movielens(tmp_path / "ml1m", tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "schema.json").is_file()
