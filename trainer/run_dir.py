"""The run folder: config.yaml, metrics.jsonl, summary.json, checkpoints/ (rank 0 writes).

Every file is written under a temporary name and renamed, so a reader (or a crash) never
sees half a file; metrics.jsonl is appended one whole line at a time.
"""

from __future__ import annotations

import json
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
        if is_main:
            self.path.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def write_config(self, cfg: Config) -> None:
        if self.is_main:
            atomic_write(self.path / "config.yaml", dump_yaml(cfg))

    def log(self, record: dict[str, Any]) -> None:
        if self.is_main:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.is_main:
            atomic_write(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")
