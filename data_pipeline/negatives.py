"""Negative items for retrieval training, drawn in the input pipeline (numpy, per batch).

    uniform     every item equally likely
    popularity  P(i) proportional to (train_count_i + 1) ** alpha: frequent items are drawn more
                often, pushing the model away from recommending only them (the long-tail trade-off;
                alpha 0 is uniform, 1 is the items' share of the interactions)
    in_batch    no draw: each row's negative is the next row's positive item, and a softmax
                loss uses all the batch's positives as candidates

A drawn item the user has among its training interactions is redrawn (a few rounds,
vectorised with sorted-key membership tests, then left: on sparse data nearly none remain).
`log_q` gives each item's log sampling probability for the logQ correction of sampled
softmax (Yi et al., RecSys 2019): in-batch candidates appear with probability proportional
to their popularity, drawn ones with P(i).
"""

from __future__ import annotations

import numpy as np
import torch
from shardrec.data_pipeline.interactions import UserItems

REDRAW_ROUNDS = 4


class NegativeSampler:
    def __init__(self, mode: str, train_count: np.ndarray, seen: UserItems | None, alpha: float = 0.75,
                 seed: int = 0, rounds: int = REDRAW_ROUNDS):
        self.mode, self.seen, self.rounds = mode, seen, rounds
        self.num_items = len(train_count)
        self.rng = np.random.default_rng(seed)
        weight = (train_count.astype(np.float64) + 1.0) ** (alpha if mode == "popularity" else 0.0)
        self.prob = weight / weight.sum()
        self.cdf = np.cumsum(self.prob)
        self.cdf[-1] = 1.0
        # The probability with which an item shows up as an in-batch candidate.
        batch_share = (train_count.astype(np.float64) + 1.0) / (train_count.sum() + self.num_items)
        self._log_q = np.log(batch_share if mode == "in_batch" else self.prob)

    def log_q(self) -> torch.Tensor:
        """(I,) float32 log sampling probability of each item (see the module docstring)."""
        return torch.from_numpy(self._log_q.astype(np.float32))

    def _draw(self, n: int) -> np.ndarray:
        if self.mode == "uniform":
            return self.rng.integers(0, self.num_items, n, dtype=np.int64)
        return np.searchsorted(self.cdf, self.rng.random(n), side="right").astype(np.int64)

    def sample(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(B,) int64 negatives for the rows (users[b], items[b])."""
        if self.mode == "in_batch":
            return np.roll(items, -1)
        negs = self._draw(len(users))
        if self.seen is None:
            return negs
        for _ in range(self.rounds):
            bad = np.flatnonzero(self.seen.contains(users, negs))
            if not len(bad):
                break
            negs[bad] = self._draw(len(bad))
        return negs

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
