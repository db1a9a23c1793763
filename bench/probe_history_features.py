"""Two more probes for issue 15's MovieLens floor (after bench/probe_rating_history.py): do
item-to-item neighbours among the user's earlier ratings, or where a rating falls in the
user's timeline, add anything over deepfm's user and item embeddings?

    .venv/bin/shardrec convert movielens --input ../shared/data/movielens_100k --out /tmp/ml_ctr
    .venv/bin/python bench/probe_history_features.py --data /tmp/ml_ctr --kind knn --out /tmp/ml_knn
    .venv/bin/python bench/tune_movielens.py --data /tmp/ml_knn --models deepfm

Copies the data set (same rows, same split) with dense columns added, each computed from the
user's ratings strictly before the row (timestamp, then line order: the converter's history
order):
  knn       item-kNN collaborative filtering: with s(i, j) the squared cosine similarity of
            two movies' sets of raters (who rated what, no labels), knn_like = the
            s(target, j)-weighted share of likes among the earlier movies j (shrunk to the
            overall rate 0.55), knn_mass = log(1 + sum_j s), knn_dev = the weighted
            deviation of those likes from the user's earlier like rate;
  temporal  h_pos = log(1 + earlier ratings), h_since_first = log(1 + seconds since the
            user's first rating), h_gap = log(1 + seconds since the previous one).
Prints each column's AUC against the label on every split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from probe_rating_history import copy_with_dense
from torchmetrics.functional import auroc

LIKE_RATE = 0.55  # share of ratings >= 4 in MovieLens 100K


def user_order(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows sorted by user, time, line; each sorted row's user start; its position j)."""
    order = np.lexsort((np.arange(len(raw)), raw[:, 3], raw[:, 0]))
    starts = np.r_[0, np.flatnonzero(np.diff(raw[order, 0])) + 1]
    counts = np.diff(np.r_[starts, len(raw)])
    start = np.repeat(starts, counts)
    return order, start, np.arange(len(raw)) - start


def knn(raw: np.ndarray) -> dict[str, np.ndarray]:
    user, item, rating = raw[:, 0], raw[:, 1], raw[:, 2]
    rated = np.zeros((user.max() + 1, item.max() + 1))
    rated[user, item] = 1
    co = rated.T @ rated
    norm = np.sqrt(np.diag(co))
    sim = (co / np.outer(norm, norm).clip(1e-9)) ** 2
    np.fill_diagonal(sim, 0)
    order, start, pos = user_order(raw)
    out = {k: np.zeros(len(raw)) for k in ("knn_like", "knn_mass", "knn_dev")}
    out["knn_like"][:] = LIKE_RATE
    for k in range(len(raw)):  # a probe: one small matrix-vector product per rating
        if pos[k] == 0:
            continue
        earlier = order[start[k]:k]
        w, liked = sim[item[order[k]], item[earlier]], (rating[earlier] >= 4).astype(float)
        r = order[k]
        out["knn_like"][r] = (w @ liked + LIKE_RATE * 0.5) / (w.sum() + 0.5)
        out["knn_mass"][r] = np.log1p(w.sum())
        out["knn_dev"][r] = (w @ (liked - liked.mean())) / (w.sum() + 0.5)
    return out


def temporal(raw: np.ndarray) -> dict[str, np.ndarray]:
    time = raw[:, 3]
    order, start, pos = user_order(raw)
    t = time[order]
    prev = np.r_[t[0], t[:-1]]
    prev[pos == 0] = t[pos == 0]
    out = {k: np.zeros(len(raw)) for k in ("h_pos", "h_since_first", "h_gap")}
    out["h_pos"][order] = np.log1p(pos) / 7
    out["h_since_first"][order] = np.log1p(t - t[start]) / 20
    out["h_gap"][order] = np.log1p(t - prev) / 20
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a `shardrec convert movielens` folder")
    p.add_argument("--kind", choices=["knn", "temporal"], required=True)
    p.add_argument("--raw", default=str(Path(__file__).resolve().parents[2] / "shared/data/movielens_100k/u.data"))
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    raw = np.loadtxt(args.raw, dtype=np.int64)
    columns = (knn if args.kind == "knn" else temporal)(raw)

    def report(split: str, table: pa.Table) -> None:
        label = torch.tensor(table["label"].to_numpy()).long()
        aucs = [f"{name} {float(auroc(torch.tensor(table[name].to_numpy()), label, task='binary')):.4f}"
                for name in columns]
        print(f"{split}: AUC of each column alone: {', '.join(aucs)}")

    copy_with_dense(args.data, args.out, raw, columns, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
