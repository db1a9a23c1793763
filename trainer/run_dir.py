"""The run folder: config.yaml, metrics.jsonl, TensorBoard events, summary.json, checkpoints/.

Rank 0 writes it, and only after `open()`: the folder belongs to one run at a time (an
exclusive `flock` on RUN/.lock, held until `close()`; the kernel drops it when the process
dies, so a crash never leaves a stale lock), and a fresh run refuses a folder that holds an
earlier run's checkpoints or summary unless told to overwrite them. The caller opens it only
once the config and data set have been validated, so a refused run writes nothing. Every file is written under a temporary name and renamed, so a reader
(or a crash) never sees half a file; metrics.jsonl is appended one whole line at a time.
`RunDir.log` is the one place records go: it appends the record to metrics.jsonl and
writes its numbers as TensorBoard scalars tagged `<event>/<key>`, or `<event>_<split>/<key>`
for records of a split (train/loss, train/samples_per_s, train/lr_embeddings,
eval_valid/auc during training, eval_test/auc, eval_test/ne, ... at the end), at the
record's step, so the two can never disagree.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from shardrec.configs.errors import UserError
from shardrec.configs.loader import dump_yaml
from shardrec.configs.tree import Config

LOCK_FILE = ".lock"
# What a run leaves in its folder; --overwrite removes these and nothing else.
RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "report.png", "report.md", "library.log")


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
        self._lock_fd: int | None = None
        self._purge_step: int | None = None  # set by rewind(): TensorBoard drops later events

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def open(self, fresh: bool, overwrite: bool = False) -> None:
        """Rank 0: create the folder and take its lock, then for a `fresh` run `prepare_fresh`."""
        if not self.is_main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        if fresh:
            try:
                self.prepare_fresh(overwrite)
            except BaseException:
                self.close()
                raise

    def prepare_fresh(self, overwrite: bool) -> None:
        """For a run that starts from step 0: refuse a folder holding an earlier run's
        checkpoints or summary unless `overwrite` (which removes them), and drop a failed
        earlier run's logs so they do not mix with this one's."""
        held = self._earlier_results()
        if held and not overwrite:
            raise UserError(
                f"run folder '{self.path}' already holds a run ({', '.join(held)}): resume it with "
                "--checkpoint.resume=latest, replace it with --overwrite, or choose another --run-dir")
        self._remove_earlier_run()

    def rewind(self, step: int) -> None:
        """A run resumes at `step`: drop what an interrupted attempt logged after it, so
        metrics.jsonl holds each step once, and have TensorBoard discard those events too."""
        if not self.is_main:
            return
        self._purge_step = step + 1
        metrics = self.path / "metrics.jsonl"
        if metrics.exists():
            kept = [line for line in metrics.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= step]
            atomic_write(metrics, "".join(f"{line}\n" for line in kept))

    def _lock(self) -> None:
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"run folder '{self.path}' is in use by another shardrec run (pid {holder}); "
                            "wait for it to finish or choose another --run-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _earlier_results(self) -> list[str]:
        held = []
        if self.checkpoints.is_dir() and any(p.name.startswith("step_") for p in self.checkpoints.iterdir()):
            held.append(f"checkpoints in {self.checkpoints}")
        if (self.path / "summary.json").exists():
            held.append("summary.json")
        return held

    def _remove_earlier_run(self) -> None:
        shutil.rmtree(self.checkpoints, ignore_errors=True)
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for events in self.path.glob("events.out.tfevents.*"):
            events.unlink()

    def write_config(self, cfg: Config) -> None:
        if self.is_main:
            atomic_write(self.path / "config.yaml", dump_yaml(cfg))

    def log(self, record: dict[str, Any]) -> None:
        """Append `record` to metrics.jsonl and its numeric fields to TensorBoard."""
        if not self.is_main or self._lock_fd is None:  # not opened (or refused): write nothing
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

            self._writer = SummaryWriter(log_dir=str(self.path), purge_step=self._purge_step)
        return self._writer

    def close(self) -> None:
        """Flush and close the TensorBoard writer and release the lock (end of the run)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

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
