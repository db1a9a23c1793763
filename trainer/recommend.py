"""`shardrec recommend`: the top K unseen items per user from a trained retrieval model.

The checkpoint loads into the run's model as plain CPU modules (DCP reassembles the tables
whatever world size wrote them). Item vectors are computed once for the whole catalogue;
users go through in chunks, each chunk scored against every item with torch (brute force:
exact; U x I x d multiply-adds, so about a second per 10^10 on one core), their known
interactions (every split of the data set) excluded, and its rows appended to the output
Parquet file, written under a temporary name and renamed at the end. Users named in
--users that the data set does not know get the most popular items (source =
"popularity"), the fallback for users with no history; so do known users without training
interactions (convert --cold-users), unless the model scores them from their side features
(two_tower).

With `index="faiss"` (`--index faiss`, needs faiss-cpu) an inner-product model's users are
looked up in a FAISS HNSW graph of the item vectors instead: approximate (the lists may
miss an item the exact scan would rank), but about log(I) work per user instead of I, for
catalogues of millions of items. FAISS returns the nearest K + (the most items a user of
the chunk has seen) items, and the seen ones are dropped from those (a membership test, no
users x items mask).

Output columns: user (the raw id), rank (1..K), item (raw id), score (float32), source.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from shardrec.configs.errors import UserError
from shardrec.configs.loader import load_config
from shardrec.data_pipeline.interactions import (
    UserItems,
    load_catalogue,
    require_interactions,
    split_pairs,
)
from shardrec.data_pipeline.schema import load_schema
from shardrec.trainer.checkpoint import fingerprint, load_checkpoint, resolve_checkpoint
from shardrec.trainer.models.retrieval import DotModel
from shardrec.trainer.registry import build_model, family
from shardrec.trainer.retrieval_eval import item_vectors, scores_new_users
from shardrec.trainer.retrieval_task import RetrievalTask
from shardrec.trainer.topk_metrics import topk_lists

SCHEMA = pa.schema([("user", pa.string()), ("rank", pa.int32()), ("item", pa.string()), ("score", pa.float32()),
                    ("source", pa.string())])


def _users(path: str | None, raw: pa.Array) -> tuple[np.ndarray, list[str]]:
    """(known user indices, unknown raw ids) of the users in `path` (a text file of one id
    per line, or CSV/Parquet with a `user` column), or every user when path is None."""
    if path is None:
        return np.arange(len(raw), dtype=np.int64), []
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--users '{p}' does not exist")
    if p.suffix == ".parquet":
        table = pq.read_table(p)
        if "user" not in table.column_names:
            raise UserError(f"{p}: no column 'user' (columns: {', '.join(table.column_names)})")
        wanted = pc.cast(table.column("user"), pa.string()).combine_chunks()
    else:
        lines = [line.strip() for line in p.read_text().splitlines()]
        if lines and lines[0] == "user":  # a one-column CSV with its header
            lines = lines[1:]
        wanted = pa.array([s for s in lines if s], pa.string())
    idx = pc.index_in(wanted, value_set=raw).to_numpy(zero_copy_only=False)
    known = ~np.isnan(idx.astype(np.float64))
    unknown = wanted.filter(pa.array(~known)).to_pylist()
    return idx[known].astype(np.int64), unknown


INDEXES = ("exact", "faiss")


def _faiss_index(items: torch.Tensor):
    """A FAISS HNSW inner-product index over the (I, d) item vectors."""
    try:
        import faiss
    except ImportError:
        raise UserError("--index faiss needs the faiss-cpu package: pip install faiss-cpu "
                        "(or use --index exact)") from None
    # FAISS's OpenMP threads spin while they wait: as many as torch may use, no more.
    faiss.omp_set_num_threads(torch.get_num_threads())
    index = faiss.IndexHNSWFlat(items.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(np.ascontiguousarray(items.numpy(), dtype=np.float32))
    return index


def _faiss_topk(index, vectors: torch.Tensor, k: int, users: np.ndarray,
                seen: UserItems) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, k) item indices (-1 where fewer are left) and their scores for the (n, d) vectors
    of `users` (n,), the items each has in `seen` dropped. No (n, I) mask is made: the
    index returns k + (the most items one of these users has) neighbours, and those found
    are tested for membership."""
    wanted = min(k + int(seen.counts()[users].max()), index.ntotal)
    index.hnsw.efSearch = max(64, wanted)  # HNSW returns at most efSearch neighbours
    score, found = index.search(np.ascontiguousarray(vectors.numpy(), np.float32), wanted)
    drop = (found < 0) | seen.contains(np.repeat(users, wanted), found.clip(min=0).ravel()).reshape(found.shape)
    keep = np.argsort(drop, axis=1, kind="stable")[:, :k]  # kept ones first, best first
    top = np.where(np.take_along_axis(drop, keep, 1), -1, np.take_along_axis(found, keep, 1))
    return torch.from_numpy(top.astype(np.int64)), torch.from_numpy(np.take_along_axis(score, keep, 1))


def recommend(run_dir: str, out: str, k: int, users: str | None = None, checkpoint: str | None = None,
              chunk: int = 1024, index: str = "exact") -> int:
    """Write the top-k lists to `out`; returns the number of users written."""
    if index not in INDEXES:
        raise UserError(f"--index '{index}': expected one of {', '.join(INDEXES)}")
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise UserError(f"'{run}' is not a run folder (no config.yaml)")
    cfg = load_config(str(run / "config.yaml"))
    if family(cfg.model.name) != "retrieval":
        raise UserError(f"'{run}' trained '{cfg.model.name}', a ranking model; `recommend` needs a retrieval model "
                        "(mf, ncf, two_tower, lightgcn); score rows with `shardrec predict`")
    schema = load_schema(cfg.dataset.path)
    require_interactions(schema, cfg.dataset.path, cfg.model.name)
    cat = load_catalogue(cfg.dataset.path, schema)
    if not 1 <= k <= cat.num_items:
        raise UserError(f"--k must be between 1 and the catalogue size ({cat.num_items:,}), got {k}")
    task = RetrievalTask(build_model(schema, cfg.model, torch.device("cpu")), cfg.retrieval.loss,
                         cfg.retrieval.negatives, None)
    if index == "faiss" and not isinstance(task.model, DotModel):
        raise UserError(f"--index faiss ranks by inner product; {cfg.model.name} scores a pair with more than "
                        "that (use --index exact)")
    path = resolve_checkpoint(run, checkpoint)
    load_checkpoint(path, task, fingerprint(cfg.model, schema))
    task.eval()
    known = {s: split_pairs(cfg.dataset.path, s) for s in schema.splits}
    seen = UserItems(np.concatenate([u for u, _ in known.values()]), np.concatenate([i for _, i in known.values()]),
                     cat.num_users)
    raw_users = cat.users.column("raw_user").combine_chunks().cast(pa.string())
    raw_items = cat.items.column("raw_item").combine_chunks().cast(pa.string())
    chosen, unknown = _users(users, raw_users)
    items = item_vectors(task, cat, torch.device("cpu"), 65536)
    train_users = known["train"][0] if "train" in known else np.zeros(0, np.int64)
    new_users = np.bincount(train_users, minlength=cat.num_users) == 0  # (U,) bool
    if scores_new_users(task.model):
        new_users[:] = False
    popularity = torch.from_numpy(cat.train_count.astype(np.float32))
    ann = _faiss_index(items) if index == "faiss" else None

    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    written = 0
    try:
        with pq.ParquetWriter(tmp, SCHEMA) as writer:
            for start in range(0, len(chosen), chunk):
                u = chosen[start:start + chunk]
                zeros = np.zeros(len(u), dtype=np.int64)
                new = torch.from_numpy(new_users[u])
                with torch.no_grad():
                    vecs = task.encode(cat.kjt(u, zeros, zeros))[0]
                if ann is None:
                    scores = task.model.score_all(vecs, items).float()
                    scores[new] = popularity  # ids training never saw: the popularity fallback
                    top = topk_lists(scores, k, seen.mask(u, cat.num_items))
                    best = scores.gather(1, top.clamp(min=0))
                else:
                    top, best = _faiss_topk(ann, vecs.float(), k, u, seen)
                    if new.any():
                        pop = popularity.expand(int(new.sum()), -1)
                        top[new] = topk_lists(pop, k, seen.mask(u[new_users[u]], cat.num_items))
                        best[new] = pop.gather(1, top[new].clamp(min=0))
                source = np.where(new_users[u], "popularity", "model")
                writer.write_table(_rows(raw_users.take(pa.array(u)), top, best, raw_items, source))
                written += len(u)
            if unknown:
                order = np.argsort(-cat.train_count, kind="stable")[:k]
                top = torch.from_numpy(np.tile(order, (len(unknown), 1)))
                score = torch.from_numpy(np.tile(cat.train_count[order].astype(np.float32), (len(unknown), 1)))
                writer.write_table(_rows(pa.array(unknown, pa.string()), top, score, raw_items,
                                         np.full(len(unknown), "popularity")))
                written += len(unknown)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


def _rows(users: pa.Array, top: torch.Tensor, scores: torch.Tensor, raw_items: pa.Array,
          source: np.ndarray) -> pa.Table:
    """Long format: one row per (user, rank); positions a user has no item for are dropped.
    `source` (n,) says per user what ranked its items ("model" or "popularity")."""
    n, k = top.shape
    valid = (top >= 0).numpy().ravel()
    user_idx = np.repeat(np.arange(n), k)[valid]
    items = top.numpy().ravel()[valid]
    return pa.table({
        "user": users.take(pa.array(user_idx)),
        "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), n)[valid]),
        "item": raw_items.take(pa.array(items)),
        "score": pa.array(scores.numpy().ravel()[valid].astype(np.float32)),
        "source": pa.array(np.repeat(source, k)[valid].astype(str), pa.string()),
    }, schema=SCHEMA)
