"""Streaming click metrics on one process against formulas computed by hand in numpy, and the
live view (progress bar with ETA, log lines when not on a terminal)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from shardrec.trainer.metrics import (
    AUC_BINS,
    LOGIT_RANGE,
    ClickMetrics,
    auc_from_histograms,
    entropy,
)
from shardrec.trainer.progress import Progress


def exact_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks (ties count 1/2): the reference."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based average ranks
    pos = labels == 1
    p, n = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - p * (p + 1) / 2.0) / (p * n))


def by_hand(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    x, y = logits.astype(np.float64), labels.astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-x))
    logloss = float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
    rate = float(y.mean())
    base_entropy = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    return {"logloss": logloss, "label_rate": rate, "ne": logloss / base_entropy,
            "calibration": float(p.mean()) / rate, "accuracy": float(np.mean((p > 0.5) == (y == 1))),
            "mse": float(np.mean((p - y) ** 2))}


def scored(logits: np.ndarray, labels: np.ndarray, batch: int = 1000) -> dict[str, float]:
    m = ClickMetrics(torch.device("cpu"))
    for i in range(0, len(labels), batch):
        m.update(torch.from_numpy(logits[i:i + batch]), torch.from_numpy(labels[i:i + batch]))
    return m.compute()


def click_data(n: int, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    y = (g.random(n) < rate).astype(np.float32)
    return (g.normal(size=n) + 1.5 * y + math.log(rate / (1 - rate))).astype(np.float32), y


def test_metrics_match_their_formulas():
    logits, labels = click_data(20_000, 0.08, seed=1)
    got, want = scored(logits, labels), by_hand(logits, labels)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key
    assert got["rows"] == 20_000
    assert got["rmse"] == pytest.approx(math.sqrt(want["mse"]), rel=1e-9)
    assert entropy(0.5) == pytest.approx(math.log(2))


def test_binned_auc_is_within_its_bound_of_the_exact_auc():
    logits, labels = click_data(50_000, 0.05, seed=2)
    got, exact = scored(logits, labels), exact_auc(logits.astype(np.float64), labels)
    # The only error is the order of a positive and a negative that share a bin (2^-15 wide
    # in logit); the metric reports a bound on it, and it is far below 1e-6 here.
    assert abs(got["auc"] - exact) <= got["auc_error_bound"]
    assert abs(got["auc"] - exact) < 1e-6
    assert got["auc_error_bound"] < 1e-4


def test_binned_auc_is_exact_when_equal_scores_tie():
    # Scores on a grid of 1/8 (many ties, each grid value in its own bin): the histogram AUC
    # counts same-bin pairs as 1/2, exactly as the Mann-Whitney AUC counts ties.
    logits, labels = click_data(30_000, 0.3, seed=3)
    logits = (np.round(logits * 8) / 8).astype(np.float32)
    assert scored(logits, labels)["auc"] == pytest.approx(exact_auc(logits, labels), abs=1e-12)


def test_auc_bins_cover_the_logit_range_and_clamp_outside():
    assert AUC_BINS >= 10**6 and LOGIT_RANGE == 16.0
    # Beyond +-16 everything lands in the end bins: those scores tie.
    neg = torch.zeros(4, dtype=torch.float64)
    pos = torch.zeros(4, dtype=torch.float64)
    neg[0], pos[3] = 1, 1
    assert auc_from_histograms(neg, pos) == (1.0, 0.0)
    m = ClickMetrics(torch.device("cpu"))
    m.update(torch.tensor([-50.0, 50.0, 40.0]), torch.tensor([0.0, 1.0, 0.0]))
    assert m.compute()["auc"] == pytest.approx(0.75)  # 50 and 40 tie in the top bin


def test_one_class_gives_nan_auc_and_ne_not_an_error():
    m = ClickMetrics(torch.device("cpu"))
    m.update(torch.tensor([0.3, -1.0]), torch.tensor([0.0, 0.0]))
    out = m.compute()
    assert math.isnan(out["auc"]) and math.isnan(out["ne"]) and math.isnan(out["calibration"])
    assert out["accuracy"] == 0.5 and out["rows"] == 2


def test_progress_bar_shows_step_loss_rate_and_eta(capsys):
    p = Progress(total_steps=10, global_batch=100, enabled=True, bar=True, log_every=5)
    records = [p.step(s, 0, 0.5) for s in range(1, 11)]
    p.close()
    err = capsys.readouterr().err
    assert re.search(r"\d\d:\d\d<\d\d:\d\d", err), err  # elapsed<ETA
    assert "sample/s" in err and "step=10" in err and "loss=0.5000" in err
    assert [r["step"] for r in records if r] == [5, 10]


def test_log_lines_when_not_on_a_terminal(capsys):
    p = Progress(total_steps=7, global_batch=64, enabled=True, bar=False, log_every=3)
    for s in range(1, 8):
        p.step(s, 0, 0.25, lrs=[0.1, 0.01])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["3/7", "6/7", "7/7"]
    assert all("samples/s" in line and "eta" in line and "loss 0.2500" in line for line in lines)


def test_other_ranks_show_and_return_nothing(capsys):
    p = Progress(total_steps=4, global_batch=8, enabled=False, bar=True, log_every=1)
    assert all(p.step(s, 0, 1.0) is None for s in range(1, 5))
    p.close()
    assert capsys.readouterr() == ("", "")
