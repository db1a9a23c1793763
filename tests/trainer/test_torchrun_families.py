"""Every retrieval and behaviour-sequence model trains under torchrun with 2 CPU ranks (gloo)
and beats what chance or popularity gives on the synthetic data of its family's tests.
Marked `long` (one torchrun launch per model): `make test-long` runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from history_data import history_dataset
from shardrec.data_pipeline import convert_interactions as convert_module
from shardrec.data_pipeline.convert_interactions import convert_interactions
from test_retrieval import _log
from test_sequential import ITEMS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, str]:
    with pytest.MonkeyPatch.context() as patch:
        # Small row groups, so that both ranks get some (ranks are balanced by row groups).
        patch.setattr(convert_module, "ROW_GROUP_ROWS", 128)
        return _datasets(tmp_path_factory.mktemp("families"))


def _datasets(root: Path) -> dict[str, str]:
    log, items = _log(root)
    convert_interactions([log], root / "clustered", "user", "item", time="ts", item_features=items, item_key="item",
                         item_sparse=["category"], seed=0)
    rng = np.random.default_rng(0)
    (root / "ring.txt").write_text("".join(f"u{u} i{(start + k) % ITEMS}\n"
                                           for u, start in enumerate(rng.integers(0, ITEMS, 400)) for k in range(12)))
    convert_interactions([root / "ring.txt"], root / "ring", "user", "item", columns=["user", "item"], header=False,
                         delimiter=" ", split="leave_last_out", history=10, train_sequences=True)
    return {"clustered": str(root / "clustered"), "ring": str(root / "ring"),
            "history": history_dataset(root / "history", False)}


def _torchrun(preset: str, data: str, run_dir: Path, *extra: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "shardrec.launch.torchrun", "--config", preset, f"--dataset.path={data}", "--run-dir", str(run_dir),
         "--train.num_threads=1", "--train.progress=false", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    return summary


RETRIEVAL = ["--train.batch_size=256", "--train.epochs=40", "--train.early_stopping.patience=4",
             "--retrieval.eval_users_per_chunk=128"]


@pytest.mark.long
@pytest.mark.parametrize("model,extra", [("mf", ()), ("ncf", ()), ("lightgcn", ()),
                                         ("two_tower", ("--optimizer.name=adam", "--optimizer.lr=0.003"))])
def test_retrieval_models_train_on_two_ranks(datasets, tmp_path, model, extra):
    s = _torchrun(f"{model}_movielens", datasets["clustered"], tmp_path / "run", *RETRIEVAL, *extra)
    assert s["recall@10"] > s["popularity_recall@10"] + 0.15, s


@pytest.mark.long
@pytest.mark.parametrize("model", ["sasrec", "gru4rec"])
def test_next_item_models_train_on_two_ranks(datasets, tmp_path, model):
    s = _torchrun(f"{model}_video_games", datasets["ring"], tmp_path / "run", "--train.epochs=30",
                  "--train.batch_size=64", "--model.flavor=debug", "--embeddings.lr=0.1", "--optimizer.lr=0.01",
                  "--train.early_stopping.patience=4", "--eval.batch_size=256")
    assert s["hr@10"] > 0.6, s


@pytest.mark.long
@pytest.mark.parametrize("model", ["din", "dien", "bst"])
def test_history_click_models_train_on_two_ranks(datasets, tmp_path, model):
    s = _torchrun("din_movielens", datasets["history"], tmp_path / "run", f"--model.name={model}",
                  "--train.epochs=6", "--train.global_batch_size=256", "--embeddings.weight_decay=0", "--model.dropout=0")
    assert s["auc"] > 0.8, s
