"""Top-K recommendation (retrieval) metrics, vectorised over users and items.

A retrieval evaluation scores the full catalogue for a batch of users, drops each user's
training items (`topk_lists(..., exclude=train_mask)`) and feeds the lists with the
users' held-out items to a `TopKAccumulator`. The accumulator keeps only sums (and one
"recommended at least once" vector per K), so ranks can add their states with one
all-reduce and get exactly the metrics of the union of their users.

Accuracy metrics (precision, recall, F1, NDCG, hit, MRR) are averaged over the users that
have at least one held-out item; users without any are skipped, as RecBole and Microsoft
Recommenders do, and counted in `users_without_test_items`. Beyond-accuracy metrics
(coverage, novelty, mean popularity, diversity) describe the lists themselves, which do
not depend on held-out items, so they use every user passed to `update()`.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

_ACCURACY = ("precision", "recall", "f1", "ndcg", "hit", "mrr")


def topk_lists(scores: Tensor, k: int, exclude: Tensor | None = None) -> Tensor:
    """Indices of the k highest-scoring items per user.

    scores: (U, I) float; exclude: optional (U, I) bool, True = never recommend (e.g. the
    user's training items). Returns (U, k) long, best first (ties in torch.topk's order).
    A user with fewer than k items left after `exclude` gets -1 in the unfilled positions
    (rather than an excluded item); `TopKAccumulator` treats -1 as "no item".
    """
    num_items = scores.shape[1]
    if k < 1 or k > num_items:
        raise ValueError(f"k={k} must be between 1 and the number of items ({num_items} items)")
    if exclude is not None:
        scores = scores.masked_fill(exclude, float("-inf"))
    top = torch.topk(scores, k, dim=1).indices
    if exclude is not None:
        top = top.masked_fill(exclude.gather(1, top), -1)
    return top


class TopKAccumulator:
    """Sums of top-K metrics over batches of users (and, via `all_reduce`, over ranks).

    ks: the cut-offs K; num_items: I, the catalogue size.
    item_popularity: optional (I,) float, training interactions per item; enables
        novelty@K = mean over recommended items of -log2(popularity_share), with
        popularity_share = (item_popularity + 1) / (sum(item_popularity) + num_items)
        (add-one smoothing, so never-seen items have a finite self-information), and
        mean_popularity@K = mean raw training count of the recommended items.
    item_category: optional (I,) long category id per item, -1 = unknown (-1 is compared
        like any other id, i.e. all unknown items form one category of their own); enables
        diversity@K = mean over lists of the fraction of distinct pairs within the top K
        whose categories differ. Lists with fewer than 2 items have no pair and are skipped.
    """

    def __init__(self, ks: list[int], num_items: int, item_popularity: Tensor | None = None,
                 item_category: Tensor | None = None):
        if not ks or min(ks) < 1:
            raise ValueError(f"ks must be non-empty positive cut-offs, got {ks}")
        self.ks = sorted(set(int(k) for k in ks))
        self.num_items = int(num_items)
        self.popularity = None if item_popularity is None else item_popularity.double()
        self.category = None if item_category is None else item_category.long()
        for name, t in (("item_popularity", self.popularity), ("item_category", self.category)):
            if t is not None and t.shape != (self.num_items,):
                raise ValueError(f"{name} must have shape ({self.num_items},), got {tuple(t.shape)}")
        self.self_info = None
        if self.popularity is not None:
            share = (self.popularity + 1) / (self.popularity.sum() + self.num_items)
            self.self_info = -torch.log2(share)
        # Every scalar sum lives in one float64 vector (one all-reduce SUM); the coverage
        # vectors in one (len(ks), I) matrix (one all-reduce MAX).
        self.names = ["users", "users_without_test_items"]
        for k in self.ks:
            self.names += [f"{m}@{k}" for m in _ACCURACY]
            if self.self_info is not None:
                self.names += [f"novelty@{k}", f"popularity@{k}", f"recommended@{k}"]
            if self.category is not None:
                self.names += [f"diversity@{k}", f"diversity_lists@{k}"]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.sums = torch.zeros(len(self.names), dtype=torch.float64)
        self.covered = torch.zeros(len(self.ks), self.num_items, dtype=torch.float64)

    def _to(self, device: torch.device) -> None:
        # State follows the inputs' device so a GPU evaluation never syncs per batch.
        if self.sums.device != device:
            self.sums, self.covered = self.sums.to(device), self.covered.to(device)
            for attr in ("popularity", "self_info", "category"):
                if getattr(self, attr) is not None:
                    setattr(self, attr, getattr(self, attr).to(device))

    def _add(self, name: str, value: Tensor) -> None:
        self.sums[self.index[name]] += value.double().sum()

    @torch.no_grad()
    def update(self, top: Tensor, relevant: Tensor) -> None:
        """top: (U, K_max) long recommended items, best first (-1 = none), K_max >= max(ks);
        relevant: (U, I) bool, each user's held-out test items."""
        kmax = self.ks[-1]
        if top.dim() != 2 or top.shape[1] < kmax:
            raise ValueError(f"top must be (U, >= {kmax}), got {tuple(top.shape)}")
        if relevant.shape != (top.shape[0], self.num_items):
            raise ValueError(f"relevant must be ({top.shape[0]}, {self.num_items}), "
                             f"got {tuple(relevant.shape)}")
        self._to(top.device)
        top = top[:, :kmax]
        valid = top >= 0
        idx = top.clamp(min=0)  # -1 -> 0 only to index; masked by `valid` everywhere
        n_rel = relevant.sum(1)
        has = n_rel > 0
        self._add("users", has)
        self._add("users_without_test_items", ~has)

        hits = (relevant.gather(1, idx) & valid)[has].double()  # (U', K_max)
        n_rel = n_rel[has].double()
        ranks = torch.arange(1, kmax + 1, device=top.device, dtype=torch.float64)
        discount = 1.0 / torch.log2(ranks + 1)
        cum_hits = hits.cumsum(1)
        cum_dcg = (hits * discount).cumsum(1)
        ideal = discount.cumsum(0)  # ideal[j] = IDCG of j+1 hits at the top
        # The first hit is the hit where the running count reaches 1.
        cum_rr = (hits * (cum_hits == 1) / ranks).cumsum(1)

        for ki, k in enumerate(self.ks):
            h = cum_hits[:, k - 1]
            p, r = h / k, h / n_rel
            pr = p + r
            self._add(f"precision@{k}", p)
            self._add(f"recall@{k}", r)
            self._add(f"f1@{k}", torch.where(pr > 0, 2 * p * r / pr.clamp(min=1e-300), 0.0))
            idcg = ideal[(n_rel.clamp(max=k) - 1).long()]
            self._add(f"ndcg@{k}", cum_dcg[:, k - 1] / idcg)
            self._add(f"hit@{k}", h > 0)
            self._add(f"mrr@{k}", cum_rr[:, k - 1])

            # Beyond-accuracy: all users' lists.
            items, ok = idx[:, :k], valid[:, :k]
            self.covered[ki].index_fill_(0, items[ok], 1.0)
            if self.self_info is not None:
                self._add(f"novelty@{k}", self.self_info[items] * ok)
                self._add(f"popularity@{k}", self.popularity[items] * ok)
                self._add(f"recommended@{k}", ok)
            if self.category is not None and k > 1:
                cat = self.category[items]  # (U, k)
                upper = torch.ones(k, k, dtype=torch.bool, device=top.device).triu(1)
                pairs = ok[:, :, None] & ok[:, None, :] & upper  # distinct pairs i < j
                differ = (cat[:, :, None] != cat[:, None, :]) & pairs
                n_pairs = pairs.sum((1, 2))
                with_pairs = n_pairs > 0
                frac = differ.sum((1, 2))[with_pairs].double() / n_pairs[with_pairs]
                self._add(f"diversity@{k}", frac)
                self._add(f"diversity_lists@{k}", with_pairs)

    def state(self) -> dict[str, Tensor]:
        """Scalar sums as 0-d float64 tensors; `coverage@K` as (I,) float64 0/1 vectors."""
        out = {n: self.sums[i].clone() for n, i in self.index.items()}
        out.update({f"coverage@{k}": self.covered[i].clone() for i, k in enumerate(self.ks)})
        return out

    @staticmethod
    def merge_states(states: list[dict]) -> dict:
        """Combine states of disjoint user sets: sums add, coverage vectors take the max."""
        merged: dict[str, Tensor] = {}
        for s in states:
            for name, t in s.items():
                if name not in merged:
                    merged[name] = t.clone()
                elif name.startswith("coverage@"):
                    merged[name] = torch.maximum(merged[name], t)
                else:
                    merged[name] = merged[name] + t
        return merged

    def all_reduce(self, group=None) -> None:
        """Sum the state over the ranks of `group` in place (coverage: MAX); a no-op when
        torch.distributed is not initialised. Every rank must call it (collective)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        dist.all_reduce(self.sums, op=dist.ReduceOp.SUM, group=group)
        dist.all_reduce(self.covered, op=dist.ReduceOp.MAX, group=group)

    def compute(self, state: dict | None = None) -> dict[str, float]:
        """Metrics from `state` (default: this accumulator's). Averages over nothing (no
        evaluated user, no list with a pair, e.g. diversity@1) are NaN."""
        s = {n: float(t.sum()) if n.startswith("coverage@") else float(t)
             for n, t in (self.state() if state is None else state).items()}

        def ratio(num: float, den: float) -> float:
            return num / den if den > 0 else math.nan

        out = {}
        for k in self.ks:
            for m in _ACCURACY:
                out[f"{m}@{k}"] = ratio(s[f"{m}@{k}"], s["users"])
            out[f"coverage@{k}"] = s[f"coverage@{k}"] / self.num_items
            if f"novelty@{k}" in s:
                out[f"novelty@{k}"] = ratio(s[f"novelty@{k}"], s[f"recommended@{k}"])
                out[f"mean_popularity@{k}"] = ratio(s[f"popularity@{k}"], s[f"recommended@{k}"])
            if f"diversity@{k}" in s:
                out[f"diversity@{k}"] = ratio(s[f"diversity@{k}"], s[f"diversity_lists@{k}"])
        out["users"] = s["users"]
        out["users_without_test_items"] = s["users_without_test_items"]
        return out
