"""DIN, BST and DIEN read the order and content of a behaviour history (sequence feature).

Synthetic clicks: 400 items in 8 groups of 50; a row's history is 3-12 earlier items, all
but one or two from one group (the user's current taste); the label is 1 when the target
item belongs to that group (with 10% label noise). Only a model that compares the target
with the history can beat a coin flip. With the histories shuffled across rows the same
model must fall back to chance: proof that the signal comes through the sequence, not from
a leak in another column.
"""

from __future__ import annotations

import pytest
import torch
from history_data import history_dataset
from shardrec.configs.loader import load_config
from shardrec.trainer.loop import run


@pytest.fixture(scope="module")
def histories(tmp_path_factory) -> dict[str, str]:
    return {kind: history_dataset(tmp_path_factory.mktemp(kind), kind == "shuffled") for kind in ("real", "shuffled")}


# Epochs each model needs on the real histories (seed 0): DIN 0.77 after 3 and 0.85 after 6;
# BST 0.87 and DIEN 0.90 after 3 already. Shuffled histories stay at chance either way.
EPOCHS = {"din": 6, "bst": 3, "dien": 3}


def _auc(model: str, data: str, run_dir, seed: int = 0) -> float:
    cfg = load_config("din_movielens", [f"--model.name={model}", f"--dataset.path={data}", f"--run_dir={run_dir}",
                                        f"--train.epochs={EPOCHS[model]}", "--train.batch_size=256",
                                        "--train.progress=false",
                                        "--model.flavor=small", "--embeddings.weight_decay=0",
                                        "--model.dropout=0", f"--train.seed={seed}"])
    return run(cfg)["auc"]


@pytest.mark.parametrize("model", ["din", "bst", "dien"])
def test_history_models_use_the_sequence(histories, tmp_path, model):
    torch.manual_seed(0)
    real = _auc(model, histories["real"], tmp_path / "real")
    shuffled = _auc(model, histories["shuffled"], tmp_path / "shuffled")
    assert real > 0.8, real
    assert shuffled < 0.6, shuffled


@pytest.mark.parametrize("seed", [1, 2])
def test_din_learns_from_any_seed(histories, tmp_path, seed):
    # DIN's activation unit starts as sum pooling (OneBiasLinear): from a zero-centred start
    # it stayed at AUC 0.52 with these seeds.
    assert _auc("din", histories["real"], tmp_path / "run", seed) > 0.8
