"""Top-K retrieval metrics: a hand-computed example, exclusion, skipped users, merging of
split states and a 2-rank gloo all-reduce equal to one process over all users."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from shardrec.trainer.topk_metrics import TopKAccumulator, topk_lists

# 3 users x 6 items.
SCORES = torch.tensor([
    [0.9, 0.8, 0.1, 0.7, 0.2, 0.3],  # u0: top-3 = [0, 1, 3]
    [0.7, 0.2, 0.9, 0.3, 0.1, 0.8],  # u1: top-3 = [2, 5, 0]
    [0.5, 0.1, 0.2, 0.6, 0.3, 0.9],  # u2: top-3 = [5, 3, 0]
])
RELEVANT_SETS = [{1, 4}, {1}, {5, 0, 2}]
POPULARITY = torch.tensor([10.0, 4.0, 0.0, 2.0, 3.0, 1.0])  # sum 20
CATEGORY = torch.tensor([0, 0, 1, -1, 1, -1])


def mask(sets: list[set[int]], num_items: int) -> torch.Tensor:
    m = torch.zeros(len(sets), num_items, dtype=torch.bool)
    for u, s in enumerate(sets):
        m[u, list(s)] = True
    return m


# Derived by hand (binary relevance):
# K=1: u0 [0] no hit; u1 [2] no hit; u2 [5] hit: P=1, R=1/3, F1=2*(1/3)/(4/3)=1/2, NDCG=1, MRR=1.
# K=3: u0 [0,1,3] hit at rank 2 of |rel|=2: P=1/3, R=1/2, F1=2*(1/6)/(5/6)=2/5,
#        DCG=1/log2(3)=0.6309297535714575, IDCG=1+1/log2(3) -> NDCG=1/(1+log2 3)=0.38685280723454163,
#        MRR=1/2.
#      u1 [2,5,0], rel {1}: all 0.
#      u2 [5,3,0] hits at ranks 1, 3 of |rel|=3: P=R=F1=2/3, DCG=1+1/log2(4)=1.5,
#        IDCG=1+1/log2(3)+1/2=2.1309297535714575 -> NDCG=0.7039180890341347, MRR=1.
# Coverage: @1 {0,2,5} = 3/6; @3 {0,1,2,3,5} = 5/6 (item 4 never recommended).
# Novelty: share = (pop+1)/(20+6): -log2 share = log2(26/11)=1.2410080995037949 (item 0),
#   log2(26/5)=2.37851162325373 (1), log2(26)=4.700439718141092 (2),
#   log2(26/3)=3.1154772174199357 (3), log2(13)=3.700439718141092 (5).
#   @1 items 0,2,5: (1.2410080995037949+4.700439718141092+3.700439718141092)/3 = 3.21396251192866
#   @3 items 0x3, 1, 3x2, 2, 5x2: (3*1.24100810+2.37851162+2*3.11547722+4.70043972+2*3.70043972)/9
#      = 24.433809511028/9 = 2.7148677234475844
# Mean popularity: @1 (10+0+1)/3 = 11/3; @3 (3*10+4+2*2+0+2*1)/9 = 40/9.
# Diversity (categories 0,0,1,-1,1,-1; -1 is one category): @3 u0 cats [0,0,-1]: 2 of 3 pairs
#   differ; u1 [1,-1,0]: 3/3; u2 [-1,-1,0]: 2/3 -> (2/3+1+2/3)/3 = 7/9. @1: no pairs -> NaN.
EXPECTED = {
    "precision@1": 1 / 3, "recall@1": 1 / 9, "f1@1": 1 / 6, "ndcg@1": 1 / 3,
    "hit@1": 1 / 3, "mrr@1": 1 / 3, "coverage@1": 0.5,
    "novelty@1": 3.21396251192866, "mean_popularity@1": 3.6666666666666665,
    "precision@3": 1 / 3, "recall@3": 0.3888888888888889, "f1@3": 0.35555555555555557,
    "ndcg@3": 0.3635902987562254,  # (0.38685280723454163 + 0 + 0.7039180890341347) / 3
    "hit@3": 2 / 3, "mrr@3": 0.5, "coverage@3": 0.8333333333333334,
    "novelty@3": 2.7148677234475844, "mean_popularity@3": 4.444444444444445,
    "diversity@3": 0.7777777777777778,
    "users": 3.0, "users_without_test_items": 0.0,
}


def hand_accumulator() -> TopKAccumulator:
    return TopKAccumulator([1, 3], 6, item_popularity=POPULARITY, item_category=CATEGORY)


def test_hand_computed_example():
    top = topk_lists(SCORES, 3)
    assert top.tolist() == [[0, 1, 3], [2, 5, 0], [5, 3, 0]]
    acc = hand_accumulator()
    acc.update(top, mask(RELEVANT_SETS, 6))
    got = acc.compute()
    assert set(got) == set(EXPECTED) | {"diversity@1"}
    assert math.isnan(got["diversity@1"])
    for key, value in EXPECTED.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_exclude_never_recommends_training_items():
    scores = torch.tensor([[5.0, 1.0, 2.0, 3.0], [1.0, 9.0, 2.0, 0.0]])
    train = torch.tensor([[True, False, False, False], [False, True, True, False]])
    assert topk_lists(scores, 2).tolist() == [[0, 3], [1, 2]]  # without exclusion
    top = topk_lists(scores, 2, exclude=train)
    assert top.tolist() == [[3, 2], [0, 3]]
    assert not train.gather(1, top).any()
    # Fewer items left than k: the missing positions are -1, never an excluded item.
    top3 = topk_lists(scores, 3, exclude=train)
    assert top3[1].tolist() == [0, 3, -1]
    acc = TopKAccumulator([3], 4, item_popularity=torch.ones(4), item_category=torch.arange(4))
    acc.update(top3, torch.tensor([[False, False, True, False], [False, True, False, False]]))
    got = acc.compute()
    assert got["hit@3"] == 0.5  # u0 hits item 2; u1's relevant item 1 was excluded
    assert got["coverage@3"] == 1.0
    assert got["diversity@3"] == 1.0


def test_users_without_test_items_are_skipped_and_counted():
    scores = torch.cat([SCORES, torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])])
    acc = hand_accumulator()
    acc.update(topk_lists(scores, 3), mask([*RELEVANT_SETS, set()], 6))
    got = acc.compute()
    assert got["users"] == 3 and got["users_without_test_items"] == 1
    for key in ("precision", "recall", "f1", "ndcg", "hit", "mrr"):
        for k in (1, 3):
            assert got[f"{key}@{k}"] == pytest.approx(EXPECTED[f"{key}@{k}"], abs=1e-12)


def random_case(seed: int, users: int = 40, items: int = 30):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(users, items, generator=g, dtype=torch.float64)
    train = torch.rand(users, items, generator=g) < 0.2
    relevant = (torch.rand(users, items, generator=g) < 0.1) & ~train
    relevant[::7] = False  # some users without test items
    popularity = torch.randint(0, 50, (items,), generator=g).double()
    category = torch.randint(-1, 4, (items,), generator=g)
    return scores, train, relevant, popularity, category


KS = [1, 3, 5, 10]


def test_merged_split_states_equal_one_accumulator():
    scores, train, relevant, pop, cat = random_case(0)
    top = topk_lists(scores, max(KS), exclude=train)
    whole = TopKAccumulator(KS, 30, pop, cat)
    whole.update(top, relevant)
    parts = [TopKAccumulator(KS, 30, pop, cat) for _ in range(2)]
    parts[0].update(top[:17], relevant[:17])
    parts[1].update(top[17:30], relevant[17:30])
    parts[1].update(top[30:], relevant[30:])
    merged = TopKAccumulator.merge_states([p.state() for p in parts])
    expected = whole.state()
    assert set(merged) == set(expected)
    for name, t in expected.items():
        assert t.dtype == torch.float64
        torch.testing.assert_close(merged[name], t, rtol=0, atol=1e-12)
    got, want = whole.compute(merged), whole.compute()
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
    # The halves alone differ from the whole (the comparison means something).
    assert parts[0].compute()["recall@10"] != pytest.approx(want["recall@10"], abs=1e-6)


def worker(rank: int, world_size: int, store: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    scores, train, relevant, pop, cat = random_case(1)
    start, stop = (0, 23) if rank == 0 else (23, len(scores))  # unequal halves
    batch = 5 + 3 * rank  # unequal batch sizes
    acc = TopKAccumulator(KS, 30, pop, cat)
    for i in range(start, stop, batch):
        j = min(i + batch, stop)
        acc.update(topk_lists(scores[i:j], max(KS), exclude=train[i:j]), relevant[i:j])
    acc.all_reduce()
    if rank == 0:
        Path(out).write_text(json.dumps(acc.compute()))
    dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process(tmp_path):
    out = tmp_path / "out.json"
    mp.spawn(worker, args=(2, str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    got = json.loads(out.read_text())
    scores, train, relevant, pop, cat = random_case(1)
    single = TopKAccumulator(KS, 30, pop, cat)
    single.update(topk_lists(scores, max(KS), exclude=train), relevant)
    want = single.compute()
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9, nan_ok=True), key
    assert want["users"] + want["users_without_test_items"] == 40


def test_k_larger_than_catalogue_raises():
    with pytest.raises(ValueError, match=r"k=7.*6 items"):
        topk_lists(torch.rand(2, 6), 7)
