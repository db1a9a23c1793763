"""Early stopping on a validation metric, and which checkpoint is the best.

The loop validates (`eval.every_steps`, `eval.every_epoch`), hands the metrics here, saves a
`best` checkpoint when this says the metric improved, and stops when it has not improved for
`patience` validations in a row. The state travels in every checkpoint's shardrec.json, so a
resumed run keeps counting where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shardrec.configs.errors import UserError
from shardrec.configs.tree import EarlyStoppingConfig

# Metrics where larger is better; the rest (logloss, ne, mse) are losses.
LARGER_IS_BETTER = {"auc", "accuracy"}


CLICK_METRICS = ("auc", "logloss", "ne", "accuracy", "mse")
TOPK_METRICS = ("recall", "precision", "f1", "ndcg", "hit", "mrr", "coverage")


def direction(cfg: EarlyStoppingConfig) -> str:
    """"max" or "min" for cfg.metric ("auto": max for auc, accuracy and top-K metrics, min
    for losses)."""
    if cfg.mode != "auto":
        return cfg.mode
    return "max" if cfg.metric in LARGER_IS_BETTER or "@" in cfg.metric else "min"


def check_metric(cfg: EarlyStoppingConfig, retrieval: bool, ks: list[int], next_item: bool = False) -> None:
    """A UserError unless cfg.metric is one the run's evaluation reports."""
    if not cfg.metric:
        return
    if next_item:
        allowed = [f"{m}@{k}{s}" for s in ("", "_full") for m in ("hr", "ndcg") for k in ks]
        hint = "a next-item metric of retrieval.ks"
    elif retrieval:
        allowed = [f"{m}@{k}" for m in TOPK_METRICS for k in ks]
        hint = "a top-K metric of retrieval.ks"
    else:
        allowed, hint = list(CLICK_METRICS), "a click metric"
    if cfg.metric not in allowed:
        raise UserError(f"config key 'train.early_stopping.metric': '{cfg.metric}' is not {hint}; "
                        f"choose one of: {', '.join(allowed)}")


@dataclass
class EarlyStopping:
    cfg: EarlyStoppingConfig
    best_value: float | None = None
    best_step: int | None = None
    bad: int = 0  # validations in a row without an improvement

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.metric)

    def update(self, metrics: dict, step: int) -> tuple[bool, bool]:
        """(the metric improved: save the best checkpoint, patience is used up: stop)."""
        value = float(metrics[self.cfg.metric])
        if self.best_value is None:
            improved = math.isfinite(value)
        elif direction(self.cfg) == "max":
            improved = value > self.best_value + self.cfg.min_delta
        else:
            improved = value < self.best_value - self.cfg.min_delta
        if improved:
            self.best_value, self.best_step, self.bad = value, step, 0
        else:
            self.bad += 1
        return improved, self.bad >= self.cfg.patience

    def state_dict(self) -> dict:
        return {"best_value": self.best_value, "best_step": self.best_step, "bad": self.bad}

    def load_state_dict(self, state: dict | None) -> None:
        if state:
            self.best_value, self.best_step, self.bad = state["best_value"], state["best_step"], state["bad"]
