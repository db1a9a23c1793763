"""Batch-size semantics and reduced precision (bf16 dense compute, fp16 table storage)."""

from __future__ import annotations

import pytest
import torch
from shardrec.configs.errors import UserError
from shardrec.configs.loader import load_config
from shardrec.data_pipeline.schema import load_schema
from shardrec.trainer.distributed import init_distributed, shutdown
from shardrec.trainer.loop import build_sharded_task, resolve_batch_size, run


def test_global_batch_size_sets_the_per_rank_one():
    cfg = load_config("tiny", ["--train.global_batch_size=1024"])
    resolve_batch_size(cfg, 4)
    assert cfg.train.batch_size == 256
    cfg = load_config("tiny", ["--train.global_batch_size=1000"])
    with pytest.raises(UserError, match="'train.global_batch_size' \\(1000\\) must be a multiple of the world size \\(3\\)"):
        resolve_batch_size(cfg, 3)
    cfg = load_config("tiny")
    resolve_batch_size(cfg, 4)
    assert cfg.train.batch_size == 256  # unchanged: batch_size is per rank


def test_fp16_tables_are_stored_in_fp16(tiny_data):
    cfg = load_config("tiny", [f"--dataset.path={tiny_data}", "--embeddings.weights_dtype=fp16"])
    env = init_distributed()
    try:
        model, _ = build_sharded_task(load_schema(tiny_data), cfg, env)
        dtypes = {k: v.dtype for k, v in model.state_dict().items() if "embedding_bags" in k}
        del model
    finally:
        shutdown(env)
    assert len(dtypes) == 26 and set(dtypes.values()) == {torch.float16}


@pytest.mark.slow
def test_bf16_compute_with_fp16_tables_still_learns(tiny_cfg, monkeypatch, capsys):
    tiny_cfg.train.precision = "bf16"
    tiny_cfg.embeddings.weights_dtype = "fp16"
    tiny_cfg.checkpoint.save_final = False
    # As on a CPU without bf16 instructions: the run says so, then trains all the same.
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    summary = run(tiny_cfg)
    assert summary["auc"] - 0.5 >= 0.6 * (summary["teacher_auc"] - 0.5), summary
    assert "no bf16 instructions (avx512_bf16 or AMX)" in capsys.readouterr().out


def test_the_emulated_bf16_note_only_where_bf16_is_emulated(monkeypatch):
    from shardrec.trainer.task import emulated_bf16_note

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert "--train.precision=fp32 is faster here" in emulated_bf16_note("bf16", "cpu")
    assert emulated_bf16_note("fp32", "cpu") is None
    assert emulated_bf16_note("bf16", "cuda") is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert emulated_bf16_note("bf16", "cpu") is None
