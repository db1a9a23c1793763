"""The note for CPUs that run FBGEMM's fp32 row-wise AdaGrad kernel slowly: given only where
that kernel is used and the probe finds it slower than the fp16 tables' loop; the probe
measures real kernels and leaves torch's random state alone."""

from __future__ import annotations

import math

import pytest
import torch
from shardrec.embeddings import cpu_kernel_check
from shardrec.embeddings.cpu_kernel_check import SLOW_RATIO, backward_ms, slow_rowwise_adagrad_note


def never() -> float:
    raise AssertionError("probed although the configuration does not use the fp32 row-wise kernel")


def test_the_note_names_fp16_tables_only_where_the_fp32_kernel_is_slower():
    note = slow_rowwise_adagrad_note("rowwise_adagrad", "fp32", "cpu", "fbgemm", ratio=lambda: 2.4)
    assert "2.4x slower" in note and "--embeddings.cpu_update=aten" in note and "--embeddings.weights_dtype=fp16" in note
    assert slow_rowwise_adagrad_note("rowwise_adagrad", "fp32", "cpu", "fbgemm", ratio=lambda: SLOW_RATIO - 0.01) is None
    assert slow_rowwise_adagrad_note("rowwise_adagrad", "fp32", "cpu", "fbgemm", ratio=lambda: 0.8) is None
    for args in [("rowwise_adagrad", "fp32", "cuda", "fbgemm"), ("adagrad", "fp32", "cpu", "fbgemm"),
                 ("sgd", "fp32", "cpu", "fbgemm"), ("rowwise_adagrad", "fp16", "cpu", "fbgemm"),
                 ("rowwise_adagrad", "fp32", "cpu", "aten")]:
        assert slow_rowwise_adagrad_note(*args, ratio=never) is None, args


def test_the_probe_times_both_kernels_and_keeps_the_random_state():
    assert backward_ms("fp32", tables=2, batch=64, steps=1) > 0
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    cpu_kernel_check.fp32_over_fp16.cache_clear()
    ratio = cpu_kernel_check.fp32_over_fp16()
    assert math.isfinite(ratio) and ratio > 0
    assert torch.equal(torch.rand(3), expected)  # a run's model and data order do not depend on the probe


@pytest.mark.parametrize("ratio, shown", [(3.0, True), (1.0, False)])
def test_a_cpu_run_says_it_on_rank_0(tiny_cfg, capsys, monkeypatch, ratio, shown):
    from shardrec.trainer.loop import run

    monkeypatch.setattr(cpu_kernel_check, "fp32_over_fp16", lambda: ratio)
    tiny_cfg.train.max_steps = 2
    tiny_cfg.embeddings.cpu_update = "fbgemm"  # the default replaces that kernel, so no note there
    run(tiny_cfg)
    assert ("3.0x slower than its fp16-table loop" in capsys.readouterr().out) == shown
