"""A model out of its sharded checkpoint: `shardrec export` (a torch.export program that loads
without TorchRec) scores like the sharded model for every model of the zoo, and `shardrec
predict` scores like `eval`, in input order, on one rank or two."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from shardrec.configs.loader import load_config
from shardrec.data_pipeline.schema import load_schema
from shardrec.launch.cli import main as cli
from shardrec.trainer.checkpoint import fingerprint, latest_checkpoint, load_checkpoint
from shardrec.trainer.distributed import init_distributed, shutdown
from shardrec.trainer.loop import build_sharded_task, eval_reader, run
from shardrec.trainer.registry import MODELS, click_models

ROOT = Path(__file__).resolve().parents[2]


def sharded_scores(cfg, split: str = "test") -> np.ndarray:
    """The sharded model's click probabilities on `split`, in reader order (one rank)."""
    env = init_distributed()
    try:
        schema = load_schema(cfg.dataset.path)
        model, _ = build_sharded_task(schema, cfg, env)
        load_checkpoint(latest_checkpoint(Path(cfg.run_dir) / "checkpoints"), model, fingerprint(cfg.model, schema))
        model.eval()
        scores = []
        with torch.no_grad():
            for batch in eval_reader(cfg, schema, env, split):
                _, (_, logits, _) = model(batch)
                scores.append(torch.sigmoid(logits).numpy())
        return np.concatenate(scores)
    finally:
        shutdown(env)


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    cfg = load_config("tiny", [f"--dataset.path={tiny_data}", f"--run_dir={tmp_path_factory.mktemp('run') / 'r'}",
                               "--train.max_steps=30"])
    return cfg, run(cfg)


# The wide terms any click model can take: a first-order term and crosses (hashed C1 x C3).
WIDE_TERMS = ["--model.first_order=true", "--model.cross_pairs=C1:C3,C9:C17"]


# `make test` exports the models that between them use every kind of layer the zoo has (DLRM's
# pairwise dots, DLRM-DCNv2's low-rank cross, FM's second order with a DNN, xDeepFM's CIN,
# Wide&Deep's crosses, DCN's cross layers with a first-order term and crosses); `make
# test-long` exports the rest too (dcnv2, dcn, lr, fm, dnn: about 6 s a model).
IN_MAKE_TEST = {"dlrm", "dlrm_dcn", "deepfm", "xdeepfm", "wide_deep", "dcn+wide_terms"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [name if name in IN_MAKE_TEST else pytest.param(name, marks=pytest.mark.long)
                                  for name in [*click_models(), "dcn+wide_terms"]])
def test_exported_model_scores_like_the_sharded_one(name, tiny_data, tmp_path):
    name, _, option = name.partition("+")
    cfg = load_config("tiny", [f"--dataset.path={tiny_data}", f"--run_dir={tmp_path / 'run'}",
                               f"--model.name={name}", f"--model.flavor={next(iter(MODELS[name].flavors))}",
                               "--train.max_steps=10", *(WIDE_TERMS if option else [])])
    run(cfg)
    assert cli(["export", "--run-dir", cfg.run_dir, "--out", str(tmp_path / "export")]) == 0
    expected = sharded_scores(cfg)
    program = torch.export.load(tmp_path / "export" / "model.pt2").module()
    schema = load_schema(tiny_data)
    got = []
    with torch.no_grad():
        for batch in eval_reader(cfg, schema, init_distributed(), "test"):
            got.append(program(batch.dense_features, batch.sparse_features.values().long(),
                               batch.sparse_features.lengths().long()).numpy())
    got = np.concatenate(got)
    assert got.shape == expected.shape == (3000,)
    assert np.abs(got - expected).max() <= 1e-5
    manifest = json.loads((tmp_path / "export" / "export.json").read_text())
    assert manifest["model"] == name and manifest["inputs"]["sparse"] == schema.sparse_names


@pytest.mark.slow
def test_the_export_readme_snippet_runs_with_torch_alone(trained, tmp_path):
    cfg, _ = trained
    assert cli(["export", "--run-dir", cfg.run_dir, "--out", str(tmp_path / "export")]) == 0
    readme = (tmp_path / "export" / "README.md").read_text()
    snippet = readme.split("```python\n")[1].split("```")[0]
    check = snippet + "\nimport sys\nassert scores.shape == (4,) and 'torchrec' not in sys.modules\nprint('ok')\n"
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    # Exporting again into the same folder needs --overwrite; anything else is never replaced.
    assert cli(["export", "--run-dir", cfg.run_dir, "--out", str(tmp_path / "export")]) == 2
    (tmp_path / "other").mkdir()
    assert cli(["export", "--run-dir", cfg.run_dir, "--out", str(tmp_path / "other"), "--overwrite"]) == 2


@pytest.mark.slow
def test_predict_scores_like_eval_in_input_order(trained, tiny_data, tmp_path):
    cfg, summary = trained
    out = tmp_path / "preds.parquet"
    assert cli(["predict", "--run-dir", cfg.run_dir, "--input", f"{tiny_data}/test", "--out", str(out),
                "--keep", "label,I1", "--batch-size", "700"]) == 0
    preds = pq.read_table(out)
    assert preds.column_names == ["label", "I1", "score"] and preds.num_rows == 3000
    test = pq.read_table(f"{tiny_data}/test")  # the split's files in name order, as predict reads them
    assert preds.column("I1").to_pylist() == test.column("I1").to_pylist()
    p, y = preds.column("score").to_numpy().astype(np.float64), preds.column("label").to_numpy()
    logloss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert math.isclose(logloss, summary["logloss"], abs_tol=1e-5)
    assert np.abs(p - sharded_scores(cfg)).max() <= 1e-5
    # Two ranks under torchrun: the same rows, scores and order.
    out2 = tmp_path / "preds2.parquet"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "shardrec",
         "predict", "--run-dir", cfg.run_dir, "--input", f"{tiny_data}/test", "--out", str(out2),
         "--keep", "I1", "--batch-size", "700"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scored 3,000 rows" in proc.stdout
    two = pq.read_table(out2)
    assert two.column("I1").to_pylist() == test.column("I1").to_pylist()
    assert np.abs(two.column("score").to_numpy() - p).max() <= 1e-6


def test_predict_names_what_is_wrong(trained, tiny_data, tmp_path, capsys):
    cfg, _ = trained
    assert cli(["predict", "--run-dir", cfg.run_dir, "--input", f"{tiny_data}/test", "--out",
                str(tmp_path / "p.parquet"), "--keep", "user_id"]) == 2
    assert "--keep user_id: not a column of the input" in capsys.readouterr().err
    assert cli(["predict", "--run-dir", cfg.run_dir, "--input", str(tmp_path / "nope.csv"), "--out",
                str(tmp_path / "p.parquet")]) == 2
    assert "input '" in capsys.readouterr().err
    assert not list(tmp_path.glob(".p.parquet*")) and not (tmp_path / "p.parquet").exists()
