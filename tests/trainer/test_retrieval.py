"""Retrieval models end to end on a small clustered implicit-feedback data set.

The data: 300 users, 200 items in 10 categories of 20; each user likes one category and
has 14 of its items plus 3 random ones. A model that learns who likes what ranks the
held-out items of a user's category far above what popularity alone finds, which is what
these tests check (thresholds a broken model cannot pass), along with distributed
evaluation (2 ranks = 1 process), `recommend`, and the cold-start path of two towers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardrec.configs.errors import UserError
from shardrec.configs.loader import load_config
from shardrec.data_pipeline.convert_interactions import convert_interactions
from shardrec.trainer.loop import run

ROOT = Path(__file__).resolve().parents[2]
USERS, ITEMS, CATEGORIES = 300, 200, 10


def _log(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    rows = []
    for u in range(USERS):
        liked = rng.integers(CATEGORIES)
        own = liked * 20 + rng.choice(20, 14, replace=False)
        for t, item in enumerate([*own, *rng.choice(ITEMS, 3, replace=False)]):
            rows.append((f"u{u}", f"i{item}", t))
    log = folder / "log.csv"
    log.write_text("user,item,ts\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    items = folder / "items.csv"
    items.write_text("item,category\n" + "".join(f"i{i},c{i // 20}\n" for i in range(ITEMS)))
    return log, items


def _segments(folder: Path) -> Path:
    """users.csv: each user's segment, the category they like (a side feature that knows
    their taste without any interaction)."""
    rng = np.random.default_rng(0)
    liked = []
    for _ in range(USERS):  # the same draws as _log
        liked.append(int(rng.integers(CATEGORIES)))
        rng.choice(20, 14, replace=False), rng.choice(ITEMS, 3, replace=False)
    users = folder / "users.csv"
    users.write_text("user,segment\n" + "".join(f"u{u},s{c}\n" for u, c in enumerate(liked)))
    return users


@pytest.fixture(scope="module")
def clustered(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("clustered")
    log, items = _log(folder)
    out = folder / "data"
    convert_interactions([log], out, "user", "item", time="ts", item_features=items, item_key="item",
                         item_sparse=["category"], cold_items=0.1, seed=0)
    return str(out)


@pytest.fixture(scope="module")
def cold_users(tmp_path_factory) -> str:
    """The same log, with user segments, and 10% of the users held out of training."""
    folder = tmp_path_factory.mktemp("cold_users")
    log, items = _log(folder)
    out = folder / "data"
    convert_interactions([log], out, "user", "item", time="ts", user_features=_segments(folder), user_key="user",
                         user_sparse=["segment"], item_features=items, item_key="item", item_sparse=["category"],
                         cold_users=0.1, seed=0)
    return str(out)


def _train(model: str, data: str, run_dir: Path, *extra: str) -> dict:
    cfg = load_config(f"{model}_movielens", [
        f"--dataset.path={data}", f"--run_dir={run_dir}", "--train.batch_size=256", "--train.epochs=40",
        "--train.progress=false", "--train.early_stopping.patience=4", "--retrieval.eval_users_per_chunk=128",
        *extra])
    return run(cfg)


@pytest.fixture(scope="module")
def mf_run(clustered, tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("mf") / "run"
    return run_dir, _train("mf", clustered, run_dir)


def test_mf_learns_each_users_taste(mf_run):
    _, s = mf_run
    for key in ("recall@10", "precision@10", "f1@10", "ndcg@10", "hit@10", "mrr@10", "coverage@10",
                "recall@20", "ndcg@20"):
        assert key in s, key
    # Popularity finds a user's category only by luck; the model knows it.
    assert s["recall@10"] > s["popularity_recall@10"] + 0.2, s
    assert s["ndcg@10"] > s["popularity_ndcg@10"] + 0.2, s
    assert s["coverage@10"] > 2 * s["popularity_coverage@10"]
    assert s["best_metric"] == "ndcg@10" and s["best_step"] <= s["steps"]


@pytest.mark.parametrize("model,extra", [
    ("lightgcn", ()),
    ("ncf", ()),
    ("mf", ("--retrieval.loss=softmax", "--retrieval.negatives=in_batch")),
    ("mf", ("--retrieval.loss=softmax", "--retrieval.negatives=popularity")),
])
def test_other_models_and_losses_learn(clustered, tmp_path, model, extra):
    s = _train(model, clustered, tmp_path / "run", *extra)
    assert s["recall@10"] > s["popularity_recall@10"] + 0.15, s


def test_two_tower_serves_cold_items_from_their_features(clustered, tmp_path):
    """Items held out of training: two towers rank them by category (the user's taste), the
    popularity fallback by their category's overall popularity."""
    s = _train("two_tower", clustered, tmp_path / "run", "--optimizer.name=adam", "--optimizer.lr=0.003")
    assert s["cold_users"] > 20
    assert s["cold_recall@10"] > s["popularity_cold_recall@10"] + 0.2, s


def test_distributed_evaluation_equals_one_process(mf_run, tmp_path):
    run_dir, _ = mf_run
    single = subprocess.run([sys.executable, "-m", "shardrec", "eval", "--run-dir", str(run_dir)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "shardrec", "eval", "--run-dir", str(run_dir), "--train.num_threads=1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads(single.stdout)
    b = json.loads(two.stdout[two.stdout.index("{"):two.stdout.rindex("}") + 1])
    assert a["users"] == b["users"] > 200
    for key, value in a.items():
        if isinstance(value, float):
            assert b[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_recommend_lists_unseen_items_best_first(mf_run, clustered, tmp_path):
    run_dir, _ = mf_run
    users = tmp_path / "users.txt"
    users.write_text("u3\nu7\nnobody\n")
    out = tmp_path / "recs.parquet"
    proc = subprocess.run([sys.executable, "-m", "shardrec", "recommend", "--run-dir", str(run_dir), "--k", "5",
                           "--users", str(users), "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = pq.read_table(out).to_pylist()
    assert [r["user"] for r in recs] == ["u3"] * 5 + ["u7"] * 5 + ["nobody"] * 5
    log = [line.split(",") for line in (Path(clustered).parent / "log.csv").read_text().splitlines()[1:]]
    for user in ("u3", "u7"):
        mine = [r for r in recs if r["user"] == user]
        assert [r["rank"] for r in mine] == [1, 2, 3, 4, 5]
        assert all(a["score"] >= b["score"] for a, b in zip(mine, mine[1:]))
        assert not {r["item"] for r in mine} & {i for u, i, _ in log if u == user}
        assert all(r["source"] == "model" for r in mine)
    counts = pq.read_table(Path(clustered) / "items.parquet")
    top = pa.compute.sort_indices(counts, [("train_count", "descending")])[:5].to_pylist()
    raw = counts.column("raw_item").to_pylist()
    assert [r["item"] for r in recs[10:]] == [raw[i] for i in top]
    assert {r["source"] for r in recs[10:]} == {"popularity"}


def test_recommend_refuses_a_ranking_run_and_a_bad_k(mf_run, tmp_path):
    from shardrec.trainer.recommend import recommend

    run_dir, _ = mf_run
    with pytest.raises(UserError, match="--k must be between 1 and the catalogue size"):
        recommend(str(run_dir), str(tmp_path / "r.parquet"), 0)
    assert not (tmp_path / "r.parquet").exists()


def test_early_stopping_metric_must_suit_the_model(clustered, tiny_data, tmp_path):
    with pytest.raises(UserError, match="'auc' is not a top-K metric of retrieval.ks; choose one of: recall@10"):
        _train("mf", clustered, tmp_path / "a", "--train.early_stopping.metric=auc")
    cfg = load_config("tiny", [f"--dataset.path={tiny_data}", f"--run_dir={tmp_path / 'b'}",
                               "--train.early_stopping.metric=ndcg@10"])
    with pytest.raises(UserError, match="'ndcg@10' is not a click metric"):
        run(cfg)
    with pytest.raises(UserError, match="trains on implicit feedback, but .* is a click data set"):
        _train("mf", tiny_data, tmp_path / "c")


@pytest.mark.parametrize("model", ["mf", "ncf", "two_tower", "lightgcn"])
def test_presets_open_with_the_command_that_makes_their_data(model):
    lines = (ROOT / "configs" / f"{model}_movielens.yaml").read_text().splitlines()
    command = next(line[2:] for line in lines[:5] if line.startswith("# shardrec convert interactions "))
    words = command.split()
    assert words[-2] == "--out" and "../shared/data/movielens_100k/u.data" in words
    assert load_config(f"{model}_movielens").dataset.path == words[-1]


def test_export_and_predict_point_a_retrieval_run_to_recommend(mf_run, tmp_path):
    from shardrec.trainer.export import export_run

    run_dir, _ = mf_run
    with pytest.raises(UserError, match="`shardrec recommend --run-dir"):
        export_run(run_dir, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_cold_users_are_held_out_and_reported_apart(cold_users, tmp_path):
    """Users without training interactions: two towers rank for them from their segment,
    mf (whose ids of them never trained) serves them the popularity list; both report them
    as cold_user_* beside the metrics over every user."""
    train = pq.read_table(Path(cold_users) / "train").column("user_id").to_numpy()
    valid = pq.read_table(Path(cold_users) / "valid").column("user_id").to_numpy()
    test = pq.read_table(Path(cold_users) / "test").column("user_id").to_numpy()
    held_out = np.setdiff1d(test, train)
    assert len(held_out) == USERS // 10 and not np.isin(held_out, valid).any()
    tt = _train("two_tower", cold_users, tmp_path / "tt", "--optimizer.name=adam", "--optimizer.lr=0.003")
    assert tt["cold_user_users"] == len(held_out)
    assert tt["cold_user_recall@10"] > tt["popularity_cold_user_recall@10"] + 0.2, tt
    mf = _train("mf", cold_users, tmp_path / "mf")
    for key in ("recall@10", "ndcg@10", "coverage@10"):
        assert mf[f"cold_user_{key}"] == pytest.approx(mf[f"popularity_cold_user_{key}"]), key
    assert mf["recall@10"] > mf["popularity_recall@10"] + 0.15, mf

    out = tmp_path / "recs.parquet"
    users = tmp_path / "users.txt"
    raw = pq.read_table(Path(cold_users) / "users.parquet").column("raw_user").to_pylist()
    users.write_text(f"{raw[held_out[0]]}\n{raw[int(train[0])]}\n")
    proc = subprocess.run([sys.executable, "-m", "shardrec", "recommend", "--run-dir", str(tmp_path / "mf"), "--k", "3",
                           "--users", str(users), "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert pq.read_table(out).column("source").to_pylist() == ["popularity"] * 3 + ["model"] * 3


def test_recommend_with_a_faiss_index_finds_the_exact_lists(mf_run, tmp_path):
    pytest.importorskip("faiss")
    run_dir, _ = mf_run
    lists = {}
    for index in ("exact", "faiss"):
        out = tmp_path / f"{index}.parquet"
        proc = subprocess.run([sys.executable, "-m", "shardrec", "recommend", "--run-dir", str(run_dir), "--k", "10",
                               "--index", index, "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        lists[index] = pq.read_table(out).to_pandas()
    exact, ann = lists["exact"], lists["faiss"]
    assert len(ann) == len(exact) == USERS * 10
    same = exact.merge(ann, on=["user", "item"]).shape[0] / len(exact)
    assert same > 0.98, same  # HNSW over 200 items misses (almost) nothing
    merged = exact.merge(ann, on=["user", "rank"])
    hits = merged[merged.item_x == merged.item_y]
    np.testing.assert_allclose(hits.score_x, hits.score_y, rtol=1e-4, atol=1e-5)


def test_recommend_refuses_faiss_for_a_model_that_is_not_an_inner_product(mf_run, tmp_path):
    """Refused before any checkpoint is read: the run folder below has none."""
    pytest.importorskip("faiss")
    run_dir = tmp_path / "ncf"
    run_dir.mkdir()
    config = (mf_run[0] / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(config.replace("name: mf", "name: ncf").replace("flavor: small", "flavor: debug"))
    proc = subprocess.run([sys.executable, "-m", "shardrec", "recommend", "--run-dir", str(run_dir), "--k", "5",
                           "--index", "faiss", "--out", str(tmp_path / "r.parquet")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert "--index faiss ranks by inner product; ncf" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "r.parquet").exists()
