"""Does what a user thought of their recent movies predict the next rating? A probe for the
behaviour-sequence models' MovieLens floor (issue 15), before building rating histories.

    .venv/bin/shardrec convert movielens --input ../shared/data/movielens_100k --out /tmp/ml_ctr
    .venv/bin/python bench/probe_rating_history.py --data /tmp/ml_ctr --out /tmp/ml_probe
    .venv/bin/python bench/tune_movielens.py --data /tmp/ml_probe --models deepfm

Copies a converted MovieLens 100K data set (same rows, same split) with two dense columns
added: the share of likes (rating >= 4) among the user's previous 10 and 50 ratings, strictly
earlier by timestamp with ties broken by line order (the converter's history order; 0.55, the
overall like rate, for a user's first rating). If deepfm gains little from them, a history of
(item, rating) pairs has little to add over the user embedding on this split.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

WINDOWS = (10, 50)
FIRST = 0.55  # share of ratings >= 4 in MovieLens 100K: the value for a user's first rating


def like_shares(raw: np.ndarray) -> dict[int, np.ndarray]:
    """raw (N, 4) user, item, rating, time -> {k: (N,) share of likes among the previous k}."""
    user, _, rating, time = raw.T
    order = np.lexsort((np.arange(len(raw)), time, user))
    liked = (rating[order] >= 4).astype(np.float64)
    starts = np.r_[0, np.flatnonzero(np.diff(user[order])) + 1]
    position = np.arange(len(raw)) - np.repeat(starts, np.diff(np.r_[starts, len(raw)]))  # j within its user
    before = np.cumsum(liked) - liked  # likes before each row, over all users
    out = {}
    for k in WINDOWS:
        n = np.minimum(position, k)
        likes = before - before[np.arange(len(raw)) - n]  # the row n places back, same user
        share = np.full(len(raw), FIRST)
        np.divide(likes, n, out=share, where=n > 0)
        out[k] = np.empty(len(raw))
        out[k][order] = share
    return out


def copy_with_dense(data: str, out: str, raw: np.ndarray, columns: dict[str, np.ndarray],
                    report: Callable[[str, pa.Table], None] | None = None) -> None:
    """Copy the converted data set `data` to `out` (same rows, same splits) with one dense
    column per entry of `columns`: name -> (N,) values by line of u.data (`raw`, N ratings),
    matched to the rows by (user_id, item_id). `report(split, table)` sees each split's table."""
    row = {(u, i): n for n, (u, i) in enumerate(zip(raw[:, 0].tolist(), raw[:, 1].tolist()))}
    schema = json.loads((Path(data) / "schema.json").read_text())
    tmp = Path(out + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for split in schema["splits"]:
        table = ds.dataset(Path(data) / split).to_table()
        rows = [row[k] for k in zip(table["user_id"].to_pylist(), table["item_id"].to_pylist())]
        for name, values in columns.items():
            table = table.append_column(name, pa.array(values[rows].astype(np.float32)))
        if report:
            report(split, table)
        (tmp / split).mkdir(parents=True)
        pq.write_table(table, tmp / split / "part-00000.parquet")
    schema["dense"] += list(columns)
    (tmp / "schema.json").write_text(json.dumps(schema, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a `shardrec convert movielens` folder")
    p.add_argument("--raw", default=str(Path(__file__).resolve().parents[2] / "shared/data/movielens_100k/u.data"))
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    raw = np.loadtxt(args.raw, dtype=np.int64)
    shares = like_shares(raw)
    copy_with_dense(args.data, args.out, raw, {f"hist_like{k}": shares[k] for k in WINDOWS})
    print(f"wrote {args.out}: dense columns {', '.join(f'hist_like{k}' for k in WINDOWS)} added")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
