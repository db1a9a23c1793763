"""The run folder: config.yaml, metrics.jsonl, TensorBoard events, summary.json, checkpoints/.

Rank 0 writes it. Every file is written under a temporary name and renamed, so a reader
(or a crash) never sees half a file; metrics.jsonl is appended one whole line at a time.
`RunDir.log` is the one place records go: it appends the record to metrics.jsonl and
writes its numbers as TensorBoard scalars tagged `<event>/<key>`, or `<event>_<split>/<key>`
for records of a split (train/loss, train/samples_per_s, train/lr_embeddings,
eval_valid/auc during training, eval_test/auc, eval_test/ne, ... at the end), at the
record's step, so the two can never disagree.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from configs.loader import dump_yaml
from configs.tree import Config


def default_run_dir(cfg: Config) -> str:
    return f"runs/{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunDir:
    """Writes the run folder; all methods are no-ops on ranks other than 0."""

    def __init__(self, path: str | Path, is_main: bool):
        self.path, self.is_main = Path(path), is_main
        self._writer = None  # made at the first record, so reading a run folder adds no events
        if is_main:
            self.path.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def write_config(self, cfg: Config) -> None:
        if self.is_main:
            atomic_write(self.path / "config.yaml", dump_yaml(cfg))

    def log(self, record: dict[str, Any]) -> None:
        """Append `record` to metrics.jsonl and its numeric fields to TensorBoard."""
        if not self.is_main:
            return
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        scalars = tensorboard_scalars(record)
        if scalars:
            writer = self._tensorboard()
            step = int(record.get("step", 0))
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, step)
            writer.flush()  # a crash or a live `tensorboard --logdir` sees what metrics.jsonl has

    def _tensorboard(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.path))
        return self._writer

    def close(self) -> None:
        """Flush and close the TensorBoard writer (call at the end of the run)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.is_main:
            atomic_write(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")


# Record fields that index a record rather than measure something.
_NOT_SCALARS = {"event", "step", "epoch", "elapsed_s", "split"}


def tensorboard_scalars(record: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars of a metrics.jsonl record: {"<event>[_<split>]/<key>": value}."""
    prefix = record.get("event", "run")
    if "split" in record:  # validation during training and the final test are separate curves
        prefix = f"{prefix}_{record['split']}"
    out = {}
    for key, value in record.items():
        if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[f"{prefix}/{key}"] = float(value)
    return out
