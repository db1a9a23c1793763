"""The hidden teacher behind synthetic labels: a small factorization-machine-like model.

logit(row) = bias
           + a_1 * mean_f u_f(id_f)                            first order, every feature
           + a_2 * mean_{(f,g) in P} <v_f(id_f), v_g(id_g)>     chosen feature pairs
           + a_3 * dense_term(z)                                 dense features (nonlinear)
           + a_4 * <W z, v_h(id_h)>                              dense x sparse, one feature

Its weights u, v are not stored anywhere: they are a hash of (seed, feature, id, slot), so a
table of ten million rows costs no memory and every worker that regenerates a chunk gets the
same teacher. DLRM-style models can represent every term (embeddings, dot interactions,
MLPs over dense features), so the teacher's own AUC is a reachable ceiling.
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + GOLDEN
        x = (x ^ (x >> np.uint64(30))) * M1
        x = (x ^ (x >> np.uint64(27))) * M2
        return x ^ (x >> np.uint64(31))


def hashed_uniform(seed: int, feature: int, ids: np.ndarray, slot: int) -> np.ndarray:
    """Deterministic pseudo-random values in [-sqrt(3), sqrt(3)) (unit variance) per id."""
    key = np.uint64((seed * 1_000_003 + feature * 131 + slot) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        mixed = ids.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93) ^ splitmix64(np.array(key))
    h = splitmix64(mixed)
    unit = (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    return ((unit * 2.0 - 1.0) * np.sqrt(3.0)).astype(np.float32)


class Teacher:
    """Scores synthetic rows; `logits(z, ids)` is deterministic given the seed.

    z: (B, D) standard-normal latents behind the dense features.
    ids: per sparse feature, (values (N,), lengths (B,)); one-hot features have lengths == 1.
    """

    def __init__(self, num_dense: int, table_sizes: list[int], seed: int, dim: int = 4,
                 first_order: float = 0.88, pairwise: float = 0.55, dense: float = 0.44,
                 dense_sparse: float = 0.22):
        self.seed, self.dim = seed, dim
        self.scales = (first_order, pairwise, dense, dense_sparse)
        rng = np.random.default_rng(seed + 7)
        # Interactions involve the smaller half of the tables (as crosses of low-cardinality
        # fields carry most learnable interaction signal in real logs); pairs of two
        # ten-million-row tables could not be learned from any affordable sample.
        small = sorted(np.argsort(table_sizes, kind="stable")[: max(2, len(table_sizes) // 2)].tolist())
        all_pairs = [(f, g) for i, f in enumerate(small) for g in small[i + 1:]]
        n_pairs = min(12, len(all_pairs))
        self.pairs = [all_pairs[i] for i in rng.choice(len(all_pairs), n_pairs, replace=False)]
        self.dense_w = rng.normal(size=num_dense).astype(np.float32) / np.sqrt(num_dense)
        self.dense_w2 = rng.normal(size=num_dense).astype(np.float32) / np.sqrt(num_dense)
        self.proj = rng.normal(size=(num_dense, dim)).astype(np.float32) / np.sqrt(num_dense * dim)
        self.cross_feature = int(rng.choice(small))
        self.bias = 0.0

    def _pooled(self, f: int, values: np.ndarray, lengths: np.ndarray, slot: int) -> np.ndarray:
        """Mean over each row's ids of the hashed weight (0 for an empty row): (B,)."""
        w = hashed_uniform(self.seed, f, values, slot)
        if len(values) == len(lengths) and np.all(lengths == 1):
            return w
        rows = np.repeat(np.arange(len(lengths)), lengths)
        sums = np.bincount(rows, weights=w, minlength=len(lengths))
        return (sums / np.maximum(lengths, 1)).astype(np.float32)

    def _vectors(self, f: int, values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """(B, dim) pooled latent vectors of feature f."""
        return np.stack([self._pooled(f, values, lengths, 1 + k) for k in range(self.dim)], axis=1)

    def raw_logits(self, z: np.ndarray, ids: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        a1, a2, a3, a4 = self.scales
        first = np.mean([self._pooled(f, v, n, 0) for f, (v, n) in enumerate(ids)], axis=0)
        first *= np.sqrt(len(ids))  # mean of F unit-variance terms -> unit variance again
        vecs = {f: self._vectors(f, *ids[f]) for f in {f for p in self.pairs for f in p} | {self.cross_feature}}
        pair = np.mean([np.sum(vecs[f] * vecs[g], axis=1) for f, g in self.pairs], axis=0)
        pair *= np.sqrt(len(self.pairs) / self.dim)
        dense = z @ self.dense_w + np.tanh(z @ self.dense_w2) * 1.5 - 0.5 * np.abs(z[:, 0])
        cross = np.sum((z @ self.proj) * vecs[self.cross_feature], axis=1) * np.sqrt(self.dim)
        return (a1 * first + a2 * pair + a3 * dense + a4 * cross).astype(np.float32)

    def calibrate(self, raw: np.ndarray, ctr: float) -> None:
        """Choose the bias so that the mean click probability on `raw` logits is `ctr`."""
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if np.mean(1.0 / (1.0 + np.exp(-(raw + mid)))) < ctr:
                lo = mid
            else:
                hi = mid
        self.bias = (lo + hi) / 2

    def probabilities(self, z: np.ndarray, ids: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.raw_logits(z, ids) + self.bias)))
