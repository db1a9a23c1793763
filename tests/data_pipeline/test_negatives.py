"""Negative sampling and the per-user interaction index it relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from shardrec.data_pipeline.interactions import UserItems
from shardrec.data_pipeline.negatives import NegativeSampler
from shardrec.trainer.models.lightgcn import normalized_adjacency


def test_user_items_mask_and_membership():
    users = np.array([2, 0, 2, 2, 0])
    items = np.array([5, 1, 0, 3, 4])
    ui = UserItems(users, items, num_users=3)
    assert ui.counts().tolist() == [2, 0, 3]
    mask = ui.mask(np.array([2, 1, 0]), num_items=6)
    assert mask.tolist() == [[True, False, False, True, False, True], [False] * 6,
                             [False, True, False, False, True, False]]
    assert ui.contains(np.array([0, 0, 2, 1]), np.array([1, 5, 3, 1])).tolist() == [True, False, True, False]


def test_uniform_negatives_avoid_the_users_items():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 50, 4000)
    items = rng.integers(0, 200, 4000)  # each user has ~33% of the items: a plain draw hits one often
    seen = UserItems(users, items, 50)
    plain = rng.integers(0, 200, 4000)
    assert seen.contains(users, plain).mean() > 0.25
    sampler = NegativeSampler("uniform", np.bincount(items, minlength=200), seen, seed=1)
    negs = sampler.sample(users, items)
    # After the redraws a few may remain (0.33 ** 5 of them): far fewer than without.
    assert seen.contains(users, negs).mean() < 0.01
    assert negs.min() >= 0 and negs.max() < 200


def test_popularity_negatives_follow_the_counts():
    counts = np.array([0, 9, 99, 999])
    sampler = NegativeSampler("popularity", counts, None, alpha=1.0, seed=0)
    negs = sampler.sample(np.zeros(200_000, dtype=np.int64), np.zeros(200_000, dtype=np.int64))
    freq = np.bincount(negs, minlength=4) / len(negs)
    expected = (counts + 1) / (counts + 1).sum()
    np.testing.assert_allclose(freq, expected, atol=0.003)
    np.testing.assert_allclose(np.exp(sampler.log_q().numpy()), expected, rtol=1e-6)
    # alpha 0 is uniform
    flat = NegativeSampler("popularity", counts, None, alpha=0.0, seed=0)
    np.testing.assert_allclose(np.exp(flat.log_q().numpy()), 0.25, rtol=1e-6)


def test_in_batch_negatives_are_the_next_rows_items():
    sampler = NegativeSampler("in_batch", np.array([3, 1, 0, 2]), None)
    assert sampler.sample(np.arange(4), np.array([3, 1, 0, 2])).tolist() == [1, 0, 2, 3]
    # log Q of an in-batch candidate: its share of the interactions (add-one smoothed)
    np.testing.assert_allclose(np.exp(sampler.log_q().numpy()), np.array([4, 2, 1, 3]) / 10, rtol=1e-6)


def test_normalized_adjacency_matches_the_dense_formula():
    users, items = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 0, 1, 1])  # (2, 1) twice
    adj = normalized_adjacency(users, items, 3, 2).to_dense()
    a = torch.zeros(5, 5)
    for u, i in {(0, 0), (0, 1), (1, 1), (2, 0), (2, 1)}:
        a[u, 3 + i] = a[3 + i, u] = 1
    d = a.sum(1).pow(-0.5)
    torch.testing.assert_close(adj, d[:, None] * a * d[None, :])


@pytest.mark.parametrize("mode", ["uniform", "popularity"])
def test_a_seeded_draw_repeats(mode):
    counts = np.arange(30)
    a = NegativeSampler(mode, counts, None, seed=3).sample(np.zeros(100, np.int64), np.zeros(100, np.int64))
    b = NegativeSampler(mode, counts, None, seed=3).sample(np.zeros(100, np.int64), np.zeros(100, np.int64))
    assert (a == b).all()
