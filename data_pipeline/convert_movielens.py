"""MovieLens 100K / 1M -> a shardrec CTR data set (label = rating >= 4).

    convert_movielens("ml-100k/", "data/ml100k", seed=0, split=(0.8, 0.1, 0.1))

Input: the GroupLens folder as downloaded. 100K: u.data (user, item, rating, time; tab),
u.user (id|age|gender|occupation|zip), u.item (id|title|release date|...|19 genre flags).
1M: ratings.dat, users.dat, movies.dat ('::' separated, latin-1).

Columns written (one row per rating):
    label          1.0 if rating >= 4 else 0.0
    user_age       dense: the user's age / 100 (1M gives its bucket's lower bound, 1..56)
    rating_time    dense: the rating's unix time scaled to [0, 1] over the whole file
    user_id        the file's user id (ids start at 1; 0 unused)
    item_id        the file's movie id (ids start at 1; 0 unused)
    gender         1 = M, 2 = F
    age_bucket     the seven MovieLens-1M buckets (<18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+) as 1..7;
                   100K's exact ages are put into the same buckets
    occupation     1 + index in u.occupation (100K) or 1 + the 1M occupation code
    zip_prefix     the first 3 characters of the zip code (the US ZIP's sectional-centre
                   prefix), 1 + index in the sorted list of prefixes present
    release_year   1 + index in the sorted list of years present (from 100K's release date,
                   1M's "Title (1995)")
    genres         multi-hot: indices in GENRES (100K's u.genre order; 1M names map to the same ids)
    hist_item_id   with history=N > 0 only: the movies the same user rated before this rating (any
                   rating, whatever its label), at most the last N, oldest first, strictly
                   before it by timestamp with ties broken by line order; a sequence feature
                   of item_id (schema.json: sequence_of "item_id", max_length N)

Every sparse feature keeps id 0 for "unknown" (no id is left out of the table). The
models need at least one dense input, hence the two dense features. Rows are split at
random with a seeded permutation and written in that shuffled order; the permutation does
not depend on `history`, so a seed puts the same rows in each split with or without it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.convert_common import SPLITS, SplitWriter, staging
from shardrec.data_pipeline.convert_interactions import history_column
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature, write_schema
from shardrec.data_pipeline.synth import split_counts

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western"]
AGE_BUCKETS = [18, 25, 35, 45, 50, 56]  # lower bounds of buckets 2..7 (bucket 1 is < 18)
# A small data set: small row groups so that several ranks each get a balanced share.
ROW_GROUP_ROWS = 8192


def _lines(path: Path, sep: str) -> list[tuple[int, list[str]]]:
    """(1-based line number, fields) of each non-empty line; latin-1 as GroupLens writes it."""
    if not path.is_file():
        raise UserError(f"MovieLens file '{path}' is missing")
    with open(path, encoding="latin-1") as f:
        return [(n, line.rstrip("\r\n").split(sep)) for n, line in enumerate(f, 1) if line.strip()]


def _int(path: Path, line: int, value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{path}:{line}: {what} '{value}' is not an integer") from None


def _need(path: Path, line: int, fields: list[str], n: int) -> list[str]:
    if len(fields) < n:
        raise UserError(f"{path}:{line}: expected at least {n} fields, got {len(fields)}")
    return fields


def _age_bucket(age: int) -> int:
    return 1 + int(np.searchsorted(AGE_BUCKETS, age, side="right"))


class _Users:
    """Per-user attributes, indexed by user id (arrays of size max_id + 1, 0 = unknown)."""

    def __init__(self, rows: list[tuple[int, int, str, int, str]]):
        size = max(r[0] for r in rows) + 1
        prefixes = sorted({r[4][:3] for r in rows})
        self.age = np.zeros(size, np.float32)
        self.gender, self.bucket, self.occupation, self.zip = (np.zeros(size, np.int64) for _ in range(4))
        for uid, age, gender, occ, zip_code in rows:
            self.age[uid] = age / 100.0
            self.bucket[uid] = _age_bucket(age)
            self.gender[uid] = {"M": 1, "F": 2}.get(gender, 0)
            self.occupation[uid] = occ
            self.zip[uid] = 1 + prefixes.index(zip_code[:3])
        self.num_zip = len(prefixes) + 1


class _Items:
    """Per-movie release year index and genre ids (a list per movie id)."""

    def __init__(self, rows: list[tuple[int, int | None, list[int]]]):
        size = max(r[0] for r in rows) + 1
        years = sorted({r[1] for r in rows if r[1] is not None})
        self.year = np.zeros(size, np.int64)
        self.genres: list[list[int]] = [[] for _ in range(size)]
        for mid, year, genres in rows:
            self.year[mid] = 0 if year is None else 1 + years.index(year)
            self.genres[mid] = genres
        self.num_years = len(years) + 1

    def genre_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per movie id: (number of genres, start in the flat list), and the flat list."""
        lengths = np.array([len(g) for g in self.genres], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        return lengths, starts, np.array([g for gs in self.genres for g in gs], np.int64)


def _read_100k(root: Path):
    occ_file = root / "u.occupation"
    raw_users = _lines(root / "u.user", "|")
    occupations = ([f[0] for _, f in _lines(occ_file, "|")] if occ_file.is_file()
                   else sorted({f[3] for _, f in raw_users}))
    users = []
    for n, f in raw_users:
        _need(root / "u.user", n, f, 5)
        if f[3] not in occupations:
            raise UserError(f"{root / 'u.user'}:{n}: occupation '{f[3]}' is not in {occ_file}")
        users.append((_int(root / "u.user", n, f[0], "user id"), _int(root / "u.user", n, f[1], "age"),
                      f[2], 1 + occupations.index(f[3]), f[4]))
    items = []
    for n, f in _lines(root / "u.item", "|"):
        _need(root / "u.item", n, f, 5 + len(GENRES))
        date = f[2].strip()  # "01-Jan-1995", empty for the one 'unknown' movie
        year = _int(root / "u.item", n, date[-4:], "release year") if date else None
        flags = f[5:5 + len(GENRES)]
        items.append((_int(root / "u.item", n, f[0], "movie id"), year,
                      [g for g, flag in enumerate(flags) if flag.strip() == "1"]))
    path = root / "u.data"
    ratings = _ratings(path, _lines(path, "\t"))
    return users, items, ratings, len(occupations) + 1


def _read_1m(root: Path):
    users = []
    for n, f in _lines(root / "users.dat", "::"):
        p = root / "users.dat"
        _need(p, n, f, 5)
        users.append((_int(p, n, f[0], "user id"), _int(p, n, f[2], "age"), f[1],
                      1 + _int(p, n, f[3], "occupation"), f[4]))
    items = []
    for n, f in _lines(root / "movies.dat", "::"):
        p = root / "movies.dat"
        _need(p, n, f, 3)
        year = re.search(r"\((\d{4})\)\s*$", f[1])
        unknown = [g for g in f[2].split("|") if g not in GENRES]
        if unknown:
            raise UserError(f"{p}:{n}: unknown genre '{unknown[0]}' (expected one of {', '.join(GENRES)})")
        items.append((_int(p, n, f[0], "movie id"), year and int(year.group(1)), [GENRES.index(g) for g in f[2].split("|")]))
    path = root / "ratings.dat"
    ratings = _ratings(path, _lines(path, "::"))
    return users, items, ratings, 22  # 21 occupation codes (0..20) + unknown


def _ratings(path: Path, lines: list[tuple[int, list[str]]]) -> np.ndarray:
    """(N, 4) int64: user, item, rating, unix time."""
    out = np.empty((len(lines), 4), np.int64)
    for i, (n, f) in enumerate(lines):
        _need(path, n, f, 4)
        out[i] = [_int(path, n, v, what) for v, what in zip(f[:4], ("user id", "movie id", "rating", "timestamp"))]
    return out


def read_movielens(input_dir: str | os.PathLike):
    """Parse the folder: (users, items, ratings (N, 4) int64, occupation table size, variant)."""
    root = Path(input_dir)
    if not root.is_dir():
        raise UserError(f"MovieLens folder '{root}' does not exist")
    if (root / "u.data").is_file():
        return (*_read_100k(root), "100k")
    if (root / "ratings.dat").is_file():
        return (*_read_1m(root), "1m")
    raise UserError(f"'{root}' holds neither MovieLens 100K (u.data, u.user, u.item) "
                    "nor 1M (ratings.dat, users.dat, movies.dat)")


def _schema(users: _Users, items: _Items, num_occupations: int, num_user: int, num_item: int,
            history: int = 0) -> DatasetSchema:
    schema = DatasetSchema(
        label="label",
        dense=["user_age", "rating_time"],
        sparse=[
            SparseFeature("user_id", num_user), SparseFeature("item_id", num_item),
            SparseFeature("gender", 3), SparseFeature("age_bucket", len(AGE_BUCKETS) + 2),
            SparseFeature("occupation", num_occupations), SparseFeature("zip_prefix", users.num_zip),
            SparseFeature("release_year", items.num_years),
            SparseFeature("genres", len(GENRES), multi_hot=True),
        ],
    )
    if history:
        schema.sparse.append(SparseFeature("hist_item_id", num_item, multi_hot=True, sequence_of="item_id",
                                           max_length=history))
    return schema


class _History:
    """Each rating's history (the user's previous up to N movies, oldest first; with `liked`,
    only those rated >= 4), by rating index in file order: the ratings sorted by (user,
    timestamp, line); a row's history is the last min(c, N) of the c candidate ratings of its
    user strictly before it, found with cumulative counts (no loop over rows); a split's rows
    take their lists with one gather."""

    def __init__(self, ratings: np.ndarray, n: int, liked: bool = False):
        line = np.arange(len(ratings))
        order = np.lexsort((line, ratings[:, 3], ratings[:, 0]))
        users = ratings[order, 0]
        kept = ratings[order, 2] >= 4 if liked else np.ones(len(order), bool)
        before = np.cumsum(kept) - kept  # candidates strictly before each sorted row (all users)
        start = np.ones(len(order), bool)
        start[1:] = users[1:] != users[:-1]
        at_start = np.maximum.accumulate(np.where(start, np.arange(len(order)), 0))
        count = before - before[at_start]  # this user's candidates before the row
        length = np.minimum(count, n)
        self.sorted_items = ratings[order, 1][kept]  # the candidates, in (user, time) order
        self.lengths = np.empty(len(ratings), np.int64)
        self.lengths[order] = length
        self.first = np.empty(len(ratings), np.int64)  # position of the oldest history item
        self.first[order] = before - length

    def column(self, rows: np.ndarray) -> pa.ListArray:
        """hist_item_id of the ratings with indices `rows`, in that order."""
        lengths = self.lengths[rows]
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        idx = np.arange(offsets[-1]) + np.repeat(self.first[rows] - offsets[:-1], lengths)
        return history_column(offsets, self.sorted_items[idx])


def _table(schema: DatasetSchema, ratings: np.ndarray, users: _Users, items: _Items,
           t_range: tuple[int, int], history: pa.ListArray | None = None) -> pa.Table:
    """Columns for the given ratings (rows in the given order), vectorized via the lookup arrays."""
    u, m = ratings[:, 0], ratings[:, 1]
    t0, t1 = t_range
    # Genres: each row copies its movie's slice of the per-movie flat list (a gather, no loop).
    item_len, item_start, item_flat = items.genre_arrays()
    lengths = item_len[m]
    offsets = np.zeros(len(m) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = item_flat[np.repeat(item_start[m] - offsets[:-1], lengths) + np.arange(offsets[-1])]
    cols = {
        "label": pa.array((ratings[:, 2] >= 4).astype(np.float32)),
        "user_age": pa.array(users.age[u]),
        "rating_time": pa.array(((ratings[:, 3] - t0) / max(t1 - t0, 1)).astype(np.float32)),
        "user_id": pa.array(u), "item_id": pa.array(m),
        "gender": pa.array(users.gender[u]), "age_bucket": pa.array(users.bucket[u]),
        "occupation": pa.array(users.occupation[u]), "zip_prefix": pa.array(users.zip[u]),
        "release_year": pa.array(items.year[m]),
        "genres": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int64())),
        **({"hist_item_id": history} if history is not None else {}),
    }
    return pa.table(cols, schema=schema.arrow_schema())


def convert_movielens(input_dir: str | os.PathLike, out: str | os.PathLike, seed: int = 0,
                      split: tuple[float, float, float] = (0.8, 0.1, 0.1),
                      overwrite: bool = False, history: int = 0, history_of: str = "all") -> DatasetSchema:
    """Convert a MovieLens 100K or 1M folder into `out` (train/valid/test + schema.json);
    history=N > 0 adds hist_item_id (see the module docstring); history_of="liked" keeps only
    the earlier movies the user rated >= 4 (the positive behaviours, as DIN's papers use)."""
    if history_of not in ("all", "liked"):
        raise UserError(f"--history-of must be 'all' or 'liked', got {history_of!r}")
    if isinstance(history, bool) or int(history) != history or history < 0:
        raise UserError(f"--history must be a non-negative integer (the most previous movies per rating), "
                        f"got {history!r}")
    history = int(history)
    raw_users, raw_items, ratings, num_occupations, variant = read_movielens(input_dir)
    if len(ratings) < len(SPLITS):
        raise UserError(f"'{input_dir}' has {len(ratings)} ratings, too few to split")
    users, items = _Users(raw_users), _Items(raw_items)
    for col, known, what in ((0, len(users.age), "user"), (1, len(items.year), "movie")):
        bad = np.flatnonzero((ratings[:, col] <= 0) | (ratings[:, col] >= known))
        if len(bad):
            raise UserError(f"{input_dir}: rating {bad[0] + 1} refers to {what} id {ratings[bad[0], col]}, "
                            f"which the {what} file does not list")
    schema = _schema(users, items, num_occupations, len(users.age), len(items.year), history)
    hist = _History(ratings, history, liked=history_of == "liked") if history else None
    t_range = (int(ratings[:, 3].min()), int(ratings[:, 3].max()))
    order = np.random.default_rng(seed).permutation(len(ratings))
    counts = split_counts(len(ratings), tuple(split))
    with staging(out, overwrite) as tmp:
        writer = SplitWriter(tmp, "part-00000.parquet", schema.arrow_schema(), ROW_GROUP_ROWS)
        start = 0
        for name, n in zip(SPLITS, counts):
            picked = order[start:start + n]
            start += n
            if n:
                writer.write(name, _table(schema, ratings[picked], users, items, t_range,
                                          hist.column(picked) if hist else None))
                schema.splits[name] = int(n)
        writer.close()
        schema.source = {"converter": "shardrec convert movielens", "variant": variant,
                         "input": str(Path(input_dir).resolve()), "seed": seed, "split": list(split),
                         "label": "rating >= 4", "ratings": int(len(ratings)),
                         "label_rate": float((ratings[:, 2] >= 4).mean())}
        if history:  # only then: data sets without a history keep the schema.json they always had
            schema.source["history"] = history
            schema.source["history_of"] = history_of
        write_schema(tmp, schema)
    return schema
