"""Evaluation of a click model over a whole split: AUC and logloss over all ranks' rows.

AUC is torchmetrics' exact BinaryAUROC, whose `compute()` gathers every rank's predictions
(a mean of per-rank AUCs would be wrong); logloss is a sum of per-row losses all-reduced
with the row count.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchmetrics.classification import BinaryAUROC

from data_pipeline.reader import ShardReader


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
def evaluate(model: torch.nn.Module, reader: ShardReader, device: torch.device,
             max_batches: int = 0) -> dict[str, float]:
    """Score `model` (a ClickTask, sharded or not) on this rank's part of a split.

    A sharded forward is a collective (all-to-all of embeddings), so every rank runs the
    same number of forwards: a rank whose part is shorter repeats its last batch and
    ignores the result. Returns auc, logloss, rows and label_rate over all ranks.
    """
    was_training = model.training
    model.eval()
    metrics = ClickMetrics(device)
    steps = reader.max_batches_any_rank
    if max_batches > 0:
        steps = min(steps, max_batches)
    batches = iter(reader)
    batch = None
    for _ in range(steps):
        real = next(batches, None)
        batch = real if real is not None else batch
        _, (_, logits, labels) = model(batch.to(device))
        if real is not None:
            metrics.update(logits, labels)
    batches.close()
    model.train(was_training)
    return metrics.compute()
