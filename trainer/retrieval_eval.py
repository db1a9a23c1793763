"""Full-ranking evaluation of a retrieval model: every user with held-out items against the
whole catalogue, their earlier interactions excluded.

    valid: each user's valid items ranked, training items excluded
    test:  each user's test items ranked, training and valid items excluded

Every rank computes the item vectors of the whole catalogue (chunks of items through the
sharded tables: the same forwards on every rank, as collectives need), takes every
world_size-th user with held-out items, scores its users chunk by chunk against the
catalogue (top-K in torch, trainer/topk_metrics.py) and all-reduces the sums, so the
metrics are exactly those of one process over all users (tests/trainer/test_retrieval.py).

Items held out of training entirely (`convert interactions --cold-items`) are reported
apart as `cold_*`: those users' cold test items ranked among the cold items only. The
popularity baseline scores the same lists by training counts (and, for cold items, which
have none, by the training count of their category: the side-feature fallback).

Users without training interactions (`convert interactions --cold-users`) are served as
`shardrec recommend` serves them: from their side features by a model that can
(`scores_new_users`: two_tower), else by the popularity list; their metrics are reported
apart as `cold_user_*` as well (and `popularity_cold_user_*`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from shardrec.data_pipeline.interactions import Catalogue, UserItems, load_catalogue, split_pairs
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.trainer.topk_metrics import TopKAccumulator, topk_lists
from torchrec.sparse.jagged_tensor import JaggedTensor


@dataclass
class RetrievalData:
    """What training and evaluation of a retrieval model read besides the batches."""

    catalogue: Catalogue
    splits: dict[str, UserItems]  # split name -> its interactions by user

    @classmethod
    def load(cls, path: str, schema: DatasetSchema, split_names: list[str]) -> RetrievalData:
        cat = load_catalogue(path, schema)
        splits = {s: UserItems(*split_pairs(path, s), cat.num_users) for s in dict.fromkeys(split_names)}
        return cls(cat, splits)

    def seen_before(self, split: str, train_split: str = "train") -> list[str]:
        """Splits whose items are excluded when ranking `split` (those that come before it)."""
        order = [train_split, "valid", "test"]
        if split not in order:
            return [train_split]
        return [s for s in order[:order.index(split)] if s in self.splits] or [train_split]

    def cold_items(self) -> np.ndarray:
        """(I,) bool: items the data set held out of training (convert --cold-items)."""
        if not int(self.catalogue.info.get("cold_items", 0)):
            return np.zeros(self.catalogue.num_items, dtype=bool)
        return self.catalogue.train_count == 0


def scores_new_users(model) -> bool:
    """Whether `model` scores a user who has no training interactions itself (from side
    features, as two_tower does); other models' ids of such users were never trained, so
    they are served the popularity list instead."""
    return bool(getattr(model, "scores_new_users", False))


def _rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _max_over_ranks(n: int) -> int:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([n])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t)
    return n


@torch.no_grad()
def item_vectors(task, cat: Catalogue, device: torch.device, chunk: int,
                 history: tuple[str, ...] = ()) -> torch.Tensor:
    """(I, d) item representations of the whole catalogue; `history` names the history keys
    a sequence model's KJTs carry (empty here: an item's vector does not depend on them)."""
    out = []
    for start in range(0, cat.num_items, chunk):
        idx = np.arange(start, min(start + chunk, cat.num_items))
        zeros = np.zeros(len(idx), dtype=np.int64)
        empty = {h: JaggedTensor(values=torch.zeros(0, dtype=torch.long),
                                 lengths=torch.zeros(len(idx), dtype=torch.int32)) for h in history}
        out.append(task.encode(cat.kjt(zeros, idx, zeros, empty).to(device))[1])
    return torch.cat(out)


def _popularity_scores(data: RetrievalData, cold: np.ndarray) -> torch.Tensor:
    """(I,) scores of the popularity baseline: training count; cold items by their category's."""
    cat = data.catalogue
    score = cat.train_count.astype(np.float64)
    category = cat.category()
    if cold.any() and category is not None:
        known = category >= 0
        totals = np.bincount(category[known & ~cold], weights=score[known & ~cold],
                             minlength=int(category.max()) + 1)
        score = np.where(cold & known, totals[np.clip(category, 0, None)] / 1e9, score)
    return torch.from_numpy(score).float()


@torch.no_grad()
def evaluate_topk(task, data: RetrievalData, split: str, ks: list[int], device: torch.device,
                  users_per_chunk: int = 1024, items_per_chunk: int = 65536, baseline: bool = False,
                  train_split: str = "train") -> dict[str, float]:
    """Metrics of `task` (a RetrievalTask, sharded or not) on `split` over all ranks; with
    `baseline` also the popularity baseline's as `popularity_<metric>`. Collective."""
    was_training = task.training
    task.eval()
    cat, rank, world = data.catalogue, *_rank_and_size()
    target = data.splits[split]
    seen = [data.splits[s] for s in data.seen_before(split, train_split)]
    cold = data.cold_items()
    items = item_vectors(task, cat, device, items_per_chunk)
    pop = _popularity_scores(data, cold).to(device)
    category = cat.category()
    kw = dict(item_popularity=torch.from_numpy(cat.train_count).double(),
              item_category=None if category is None else torch.from_numpy(category))
    accs = {"": TopKAccumulator(ks, cat.num_items, **kw)}
    if baseline:
        accs["popularity_"] = TopKAccumulator(ks, cat.num_items, **kw)
    if cold.any():
        accs["cold_"] = TopKAccumulator(ks, cat.num_items, **kw)
        if baseline:
            accs["popularity_cold_"] = TopKAccumulator(ks, cat.num_items, **kw)
    cold_t = torch.from_numpy(cold).to(device)
    kmax = min(max(ks), cat.num_items)
    all_users = np.flatnonzero(target.counts() > 0)
    new_users = data.splits[train_split].counts() == 0  # (U,) bool
    serves_new = scores_new_users(task.model)
    if new_users[all_users].any():
        accs["cold_user_"] = TopKAccumulator(ks, cat.num_items, **kw)
        if baseline:
            accs["popularity_cold_user_"] = TopKAccumulator(ks, cat.num_items, **kw)

    users = all_users[rank::world]
    chunks = _max_over_ranks(math.ceil(len(users) / users_per_chunk))
    for c in range(chunks):
        u = users[c * users_per_chunk:(c + 1) * users_per_chunk]
        real = len(u) > 0
        if not real:
            u = np.zeros(1, dtype=np.int64)  # this rank is done; its forward keeps the collectives matched
        zeros = np.zeros(len(u), dtype=np.int64)
        user_vecs = task.encode(cat.kjt(u, zeros, zeros).to(device))[0]
        if not real:
            continue
        scores = task.model.score_all(user_vecs, items).float()
        new = torch.from_numpy(new_users[u]).to(device)
        if not serves_new and new.any():
            scores[new] = pop  # the popularity fallback, as recommend serves them
        exclude = seen[0].mask(u, cat.num_items).to(device)
        for s in seen[1:]:
            exclude |= s.mask(u, cat.num_items).to(device)
        relevant = target.mask(u, cat.num_items).to(device)
        for prefix, acc in accs.items():
            s = pop.expand_as(scores) if prefix.startswith("popularity_") else scores
            ex, rel = exclude, relevant
            kind = prefix.removeprefix("popularity_")
            if kind == "cold_":  # rank the cold items only, for their cold test items
                ex, rel = exclude | ~cold_t, relevant & cold_t
            elif kind == "cold_user_":  # the users without training interactions only
                if not new.any():
                    continue
                s, ex, rel = s[new], ex[new], rel[new]
            acc.update(topk_lists(s, kmax, ex), rel)
    out = {}
    for prefix, acc in accs.items():
        acc.all_reduce()
        out.update({prefix + k: v for k, v in acc.compute().items()})
    task.train(was_training)
    return out
