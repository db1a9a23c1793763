"""Evaluation of a click model over a whole split: AUC and logloss over all ranks' rows.

AUC is torchmetrics' exact BinaryAUROC, whose `compute()` gathers every rank's predictions
(a mean of per-rank AUCs would be wrong); logloss is a sum of per-row losses all-reduced
with the row count.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchmetrics.classification import BinaryAUROC
from torchrec.datasets.utils import Batch


class ClickMetrics:
    """Accumulates (logits (B,), labels (B,)) and computes global metrics."""

    def __init__(self, device: torch.device):
        self.device = device
        self.auroc = BinaryAUROC().to(device)
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, rows, positives

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits, labels = logits.float(), labels.float()
        self.auroc.update(torch.sigmoid(logits), labels.long())
        loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
        self.sums += torch.stack([loss.double(), torch.tensor(float(labels.numel()), device=self.device,
                                                              dtype=torch.float64), labels.sum().double()])

    def compute(self) -> dict[str, float]:
        sums = self.sums.clone()
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(sums)
        loss, rows, positives = sums.tolist()
        return {"auc": float(self.auroc.compute()), "logloss": loss / max(rows, 1.0),
                "rows": int(rows), "label_rate": positives / max(rows, 1.0)}


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable[Batch], device: torch.device,
             max_batches: int = 0) -> dict[str, float]:
    """Score `model` (a ClickTask, sharded or not) on `batches`; returns auc, logloss, rows."""
    was_training = model.training
    model.eval()
    metrics = ClickMetrics(device)
    it = iter(batches)
    if max_batches > 0:
        it = itertools.islice(it, max_batches)
    for batch in it:
        _, (_, logits, labels) = model(batch.to(device))
        metrics.update(logits, labels)
    model.train(was_training)
    return metrics.compute()
