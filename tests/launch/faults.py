"""Helpers of the fault-tolerance tests: start a job, kill one of its workers once a
checkpoint exists, compare final checkpoints tensor by tensor."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import torch
from shardrec.trainer.checkpoint import latest_checkpoint, list_checkpoints
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save


def children(pid: int) -> list[int]:
    """All descendants of a process (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = latest_checkpoint(run_dir / "checkpoints")
        if found is not None:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"the job ended (exit {proc.returncode}) before its first checkpoint")
        time.sleep(0.02)
    raise AssertionError("no checkpoint in time")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_worker(root_pid: int, env: dict[str, str] | None = None, title: str | None = None) -> int:
    """SIGKILL the first descendant whose environment holds `env` or whose command line
    (a Ray actor's process title) contains `title`; returns its pid."""
    for pid in children(root_pid):
        hit = (env is not None and all(environ(pid).get(k) == v for k, v in env.items())) or \
            (title is not None and title in cmdline(pid))
        if hit:
            os.kill(pid, signal.SIGKILL)
            return pid
    raise AssertionError(f"no process of {root_pid} with {env or title}: "
                         + "; ".join(cmdline(p)[:80] for p in children(root_pid)))


def final_tensors(run_dir: Path, tmp: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the run's newest checkpoint (model and optimizer), unsharded."""
    out = tmp / f"{run_dir.name}.pt"
    dcp_to_torch_save(str(list_checkpoints(run_dir / "checkpoints")[-1]), str(out))
    state = torch.load(out, weights_only=False)
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, torch.Tensor):
            flat[prefix] = value

    walk("", {k: v for k, v in state.items() if k in ("model", "optim")})
    return flat


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys() and len(a) > 10
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)
