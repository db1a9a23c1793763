"""Next-item models (sasrec, gru4rec) on a log whose order is the signal.

Each of 400 users walks through 12 consecutive items of a 100-item ring from a random start
(item k is followed by k + 1); leave-last-out holds out the last two steps. A model that reads
the history's order ranks the held-out item first among 100 sampled ones and high in the
whole catalogue; one that does not stays near chance (HR@10 about 0.1 and 0.1).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from shardrec.configs.errors import UserError
from shardrec.configs.loader import load_config
from shardrec.data_pipeline.convert_interactions import convert_interactions
from shardrec.data_pipeline.interactions import load_catalogue
from shardrec.data_pipeline.schema import load_schema
from shardrec.trainer.loop import run
from shardrec.trainer.models.sequential import FLAVORS, HISTORY, GRU4Rec, SASRec
from torchrec.sparse.jagged_tensor import JaggedTensor

ITEMS = 100


@pytest.fixture(scope="module")
def ring(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("ring")
    rng = np.random.default_rng(0)
    lines = [f"u{u} i{(start + k) % ITEMS}\n" for u, start in enumerate(rng.integers(0, ITEMS, 400)) for k in range(12)]
    (folder / "log.txt").write_text("".join(lines))
    convert_interactions([folder / "log.txt"], folder / "data", "user", "item", columns=["user", "item"],
                         header=False, delimiter=" ", split="leave_last_out", history=10, train_sequences=True)
    return str(folder / "data")


@pytest.mark.parametrize("model", ["sasrec", "gru4rec"])
def test_next_item_models_learn_the_order(ring, tmp_path, model):
    cfg = load_config(f"{model}_video_games", [
        f"--dataset.path={ring}", f"--run_dir={tmp_path / 'run'}", "--train.epochs=12", "--train.batch_size=128",
        "--train.progress=false", "--model.flavor=debug", "--embeddings.lr=0.1", "--optimizer.lr=0.01",
        "--train.early_stopping.patience=4", "--eval.batch_size=256"])
    s = run(cfg)
    for key in ("hr@10", "ndcg@10", "hr@10_full", "ndcg@10_full"):
        assert key in s, key
    assert s["rows"] == 400
    assert s["hr@10"] > 0.6, s
    assert s["hr@10_full"] > 0.4, s
    assert s["ndcg@10"] <= s["hr@10"]


def test_next_item_models_need_a_history(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("".join(f"u{u} i{k}\n" for u in range(5) for k in range(4)))
    convert_interactions([log], tmp_path / "data", "user", "item", columns=["user", "item"], header=False,
                         delimiter=" ", split="leave_last_out")
    cfg = load_config("sasrec_video_games", [f"--dataset.path={tmp_path / 'data'}", f"--run_dir={tmp_path / 'r'}"])
    with pytest.raises(UserError, match="convert it with `shardrec convert interactions ... --history 50`"):
        run(cfg)


def test_train_sequences_hold_each_users_last_training_row(ring):
    train = pq.read_table(Path(ring) / "train").to_pylist()
    seqs = pq.read_table(Path(ring) / "train_sequences").to_pylist()
    assert len(seqs) == 400 and len({r["user_id"] for r in seqs}) == 400
    last = {}
    for r in train:  # rows are in (user, time) order
        last[r["user_id"]] = r
    assert seqs == [last[r["user_id"]] for r in seqs]
    # 12 events: 10 train; the last train row's history is the 9 before it.
    assert {len(r[HISTORY]) for r in seqs} == {9}


def test_train_valid_sequences_hold_each_users_valid_row(ring):
    """The final fit's rows: each user's valid row, whose history is the whole training
    sequence; no row holds the test item, in its item or its history."""
    valid = pq.read_table(Path(ring) / "valid").to_pylist()
    test = {r["user_id"]: r["item_id"] for r in pq.read_table(Path(ring) / "test").to_pylist()}
    seqs = pq.read_table(Path(ring) / "train_valid_sequences").to_pylist()
    assert sorted(seqs, key=lambda r: r["user_id"]) == sorted(valid, key=lambda r: r["user_id"])
    assert {len(r[HISTORY]) for r in seqs} == {10}  # the 10 train items (the history's cap)
    assert all(test[r["user_id"]] != r["item_id"] and test[r["user_id"]] not in r[HISTORY] for r in seqs)


def test_a_final_fit_on_train_and_valid_is_scored_on_test_only(ring, tmp_path):
    args = [f"--dataset.path={ring}", "--train.batch_size=64", "--train.progress=false", "--model.flavor=debug",
            "--embeddings.lr=0.1", "--optimizer.lr=0.01", "--eval.batch_size=256",
            "--dataset.train_split=train_valid_sequences"]
    cfg = load_config("sasrec_video_games", [*args, f"--run_dir={tmp_path / 'r'}"])
    with pytest.raises(UserError, match="trains on the 'valid' events, which eval.validation_split scores"):
        run(cfg)
    assert not (tmp_path / "r").exists()
    cfg = load_config("sasrec_video_games", [*args, f"--run_dir={tmp_path / 'fit'}", "--train.epochs=10",
                                             "--train.early_stopping.metric="])
    s = run(cfg)
    assert s["eval_split"] == "test" and s["rows"] == 400
    assert s["hr@10"] > 0.6, s


@pytest.mark.parametrize("cls,block", [(SASRec, "pre_norm"), (SASRec, "reference"), (GRU4Rec, "pre_norm")])
def test_every_position_sees_only_its_prefix(ring, cls, block):
    """With one negative per position, position j's state is exactly the last-position state
    of the row cut after item j (causal), and its target is the item that follows it."""
    torch.manual_seed(0)
    schema = load_schema(ring)
    cat = load_catalogue(ring, schema)
    model = cls(schema, dataclasses.replace(FLAVORS["debug"], block=block), torch.device("cpu")).eval()
    hist = [[3, 4, 5, 6], [7], []]
    items = np.array([7, 8, 9])

    def kjt(histories, targets, counts=None):
        jt = JaggedTensor(values=torch.tensor([i for h in histories for i in h], dtype=torch.long),
                          lengths=torch.tensor([len(h) for h in histories], dtype=torch.int32))
        negs = np.zeros(int(sum(counts)) if counts is not None else len(targets), np.int64)
        return cat.kjt(np.zeros(len(targets), np.int64), targets, negs, {HISTORY: jt}, counts)

    user, target, neg, _ = model(kjt(hist, items, np.array([4, 1, 1])))
    assert user.shape == target.shape == neg.shape == (6, 8)
    prefixes = [[3], [3, 4], [3, 4, 5], [3, 4, 5, 6], [7], []]
    following = np.array([4, 5, 6, 7, 8, 9])
    alone, item, _, _ = model(kjt(prefixes, following))
    torch.testing.assert_close(user, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(target, item)


def test_sasrec_trains_on_every_position_of_per_user_rows(ring, tmp_path):
    cfg = load_config("sasrec_video_games", [
        f"--dataset.path={ring}", f"--run_dir={tmp_path / 'run'}", "--train.epochs=30", "--train.batch_size=64",
        "--train.progress=false", "--model.flavor=debug", "--embeddings.lr=0.1", "--optimizer.lr=0.01",
        "--train.early_stopping.patience=4", "--eval.batch_size=256", "--dataset.train_split=train_sequences",
        "--retrieval.train_positions=all"])
    s = run(cfg)
    assert s["hr@10"] > 0.6, s
    assert s["hr@10_full"] > 0.4, s


def test_train_positions_all_is_refused_where_it_cannot_work(ring, tmp_path):
    cfg = load_config("sasrec_video_games", [f"--dataset.path={ring}", f"--run_dir={tmp_path / 'r'}",
                                             "--retrieval.train_positions=all", "--retrieval.loss=softmax"])
    with pytest.raises(UserError, match="needs retrieval.loss bce or bpr"):
        run(cfg)
    assert not (tmp_path / "r").exists()


def test_next_item_ranks_count_what_scores_above_the_item_outside_the_history():
    from shardrec.trainer.next_item_eval import next_item_ranks

    rng = np.random.default_rng(3)
    b, items = 6, 40
    scores = torch.from_numpy(rng.normal(size=(b, items)).astype(np.float32))
    targets = rng.integers(0, items, b)
    lengths = rng.integers(0, 8, b)
    lengths[0] = 0
    histories = [rng.choice(items, n, replace=False) for n in lengths]
    histories[1] = np.r_[histories[1], targets[1]]  # an item seen before may come again
    cand = rng.integers(0, items, (b, 5))
    hist = JaggedTensor(values=torch.from_numpy(np.concatenate(histories)).long(),
                        lengths=torch.tensor([len(h) for h in histories], dtype=torch.int32))
    s = scores.numpy().copy()
    sampled, full = next_item_ranks(scores, torch.from_numpy(targets), hist, torch.from_numpy(cand))
    for r in range(b):
        t = s[r, targets[r]]
        assert int(sampled[r]) == int((s[r, cand[r]] > t).sum())
        others = [i for i in range(items) if i not in set(histories[r]) and i != targets[r]]
        assert int(full[r]) == int((s[r, others] > t).sum()), r


def test_next_item_ranks_count_and_come_back_on_the_cpu():
    """scores may live on a GPU while targets, candidates and history come from the CPU reader:
    the ranks match a plain count and are CPU tensors (here all on the CPU; the H200 run in
    docs/benchmarks.md exercised the mixed case)."""
    import torch
    from shardrec.trainer.next_item_eval import next_item_ranks
    from torchrec.sparse.jagged_tensor import JaggedTensor

    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.8, 0.2, 0.7, 0.6]])
    hist = JaggedTensor(values=torch.tensor([1, 0]), lengths=torch.tensor([1, 1], dtype=torch.int32))
    sampled, full = next_item_ranks(scores.clone(), torch.tensor([2, 2]), hist, torch.tensor([[0, 1], [1, 3]]))
    # row 0: target 0.5; candidates 0.1, 0.9 -> 1 above; catalogue less item 1 -> none above.
    # row 1: target 0.7; candidates 0.2, 0.6 -> 0 above; catalogue less item 0 -> none above.
    assert sampled.tolist() == [1, 0] and full.tolist() == [0, 0]
    assert sampled.device.type == full.device.type == "cpu"
