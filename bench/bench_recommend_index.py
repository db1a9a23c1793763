"""`shardrec recommend`'s two top-K searches on a large synthetic catalogue: the exact scan
(every item scored with torch, in chunks of users) against the FAISS HNSW index
(`--index faiss`), in one run.

    .venv/bin/python bench/bench_recommend_index.py                 # 1M items x 64, 2,000 users
    .venv/bin/python bench/bench_recommend_index.py --items 200000 --users 5000

The vectors are clustered (items around 1,000 centres, users near one centre each), as
trained embeddings are, with 50 random "seen" items excluded per user. Printed: build and
query seconds, queries per second of each, the speed-up of the index's queries over the
scan, and the index's recall of the exact top K (the fraction of exact lists it finds).
Both call the functions `recommend` calls (trainer/recommend.py, trainer/topk_metrics.py).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from shardrec.data_pipeline.interactions import UserItems
from shardrec.trainer.recommend import _faiss_index, _faiss_topk
from shardrec.trainer.topk_metrics import topk_lists


def clustered(n: int, centres: torch.Tensor, spread: float, g: torch.Generator) -> torch.Tensor:
    """(n, d) vectors: a random centre each, plus Gaussian noise."""
    pick = torch.randint(len(centres), (n,), generator=g)
    return centres[pick] + spread * torch.randn(n, centres.shape[1], generator=g)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=2_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--chunk", type=int, default=256, help="users per batch (as recommend --batch-size)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(1000, args.dim, generator=g)
    items = clustered(args.items, centres, 0.5, g)
    users = clustered(args.users, centres, 0.5, g)
    pairs = np.random.default_rng(0).integers(0, args.items, (args.users, 50))
    seen = UserItems(np.repeat(np.arange(args.users), 50), pairs.ravel(), args.users)
    ids = np.arange(args.users)

    start = time.perf_counter()
    exact = []
    for s in range(0, args.users, args.chunk):  # as recommend: the users' seen items as a mask
        mask = seen.mask(ids[s:s + args.chunk], args.items)
        exact.append(topk_lists(users[s:s + args.chunk] @ items.T, args.k, mask))
    scan_s = time.perf_counter() - start
    exact = torch.cat(exact)

    start = time.perf_counter()
    index = _faiss_index(items)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    found = torch.cat([_faiss_topk(index, users[s:s + args.chunk], args.k, ids[s:s + args.chunk], seen)[0]
                       for s in range(0, args.users, args.chunk)])
    query_s = time.perf_counter() - start
    recall = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact, found)) / exact.numel()

    print(f"{args.items:,} items x {args.dim}, {args.users:,} users, top {args.k}, {args.threads} threads")
    print("| search | build s | query s | users/s | recall of the exact top K |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| exact scan (torch) | 0 | {scan_s:.2f} | {args.users / scan_s:,.0f} | 1.000 |")
    print(f"| FAISS HNSW (M 32) | {build_s:.1f} | {query_s:.2f} | {args.users / query_s:,.0f} | {recall:.3f} |")
    print(f"query speed-up of the index over the scan: {scan_s / query_s:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
