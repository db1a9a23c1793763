"""Evaluation of a click model over a whole split, with metrics over all ranks' rows.

The metrics (trainer/metrics.py) are streaming sums and a fixed-bin AUC histogram,
all-reduced once at the end: AUC, logloss, NE, calibration, accuracy, MSE.
"""

from __future__ import annotations

import torch
from shardrec.data_pipeline.convert_arrow import placeholder_batch
from shardrec.data_pipeline.reader import ShardReader
from shardrec.trainer.metrics import ClickMetrics

__all__ = ["ClickMetrics", "evaluate"]


@torch.no_grad()
def evaluate(model: torch.nn.Module, reader: ShardReader, device: torch.device,
             max_batches: int = 0) -> dict[str, float]:
    """Score `model` (a ClickTask, sharded or not) on this rank's part of a split.

    A sharded forward is a collective (all-to-all of embeddings), so every rank runs the
    same number of forwards: a rank whose part is shorter repeats its last batch (or, with
    no rows of the split at all, a placeholder row) and ignores the result. Returns auc, logloss, rows, label_rate, ne, calibration,
    accuracy, mse, rmse and auc_error_bound over all ranks (see trainer.metrics).
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
        batch = real if real is not None else batch if batch is not None else placeholder_batch(reader.schema)
        _, (_, logits, labels) = model(batch.to(device))
        if real is not None:
            metrics.update(logits, labels)
    batches.close()
    model.train(was_training)
    return metrics.compute()
