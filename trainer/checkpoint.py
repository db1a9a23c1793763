"""Sharded checkpoints with torch.distributed.checkpoint (DCP).

A checkpoint is the folder RUN/checkpoints/step_<N>/ holding the model (each rank writes its
own table shards), the combined optimizer (fused FBGEMM state included), the step, and per
rank its RNG state and reader position. It is written to a hidden temporary folder and
renamed when every rank has finished, so a crash during a save leaves the previous one.
Ranks hold different state-dict keys (a table-wise table lives on one rank), so nothing here
runs a per-key collective; DCP's own planner coordinates the write.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner
from torchrec.optim.keyed import KeyedOptimizerWrapper

from configs.errors import UserError

PREFIX = "step_"


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def list_checkpoints(root: Path) -> list[Path]:
    """Completed checkpoints under root, oldest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)),
                  key=lambda p: int(p.name[len(PREFIX):]))


def _state(model: torch.nn.Module, optimizer: Any | None, step: int, reader_state: dict) -> dict:
    """The DCP state dict; on load it is the template DCP fills in place, so its keys are fixed."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    state = {
        "model": model.state_dict(),
        "step": step,
        "world_size": dist.get_world_size() if dist.is_initialized() else 1,
        # Per-rank entries carry the rank in their key: DCP keeps one copy of equal keys.
        f"rank{rank}": {"rng": torch.get_rng_state(),
                        "reader": {"epoch": 0, "batches": 0, **reader_state}},
    }
    if optimizer is not None:
        state["optim"] = optimizer.state_dict()
    return state


def save_checkpoint(root: Path, step: int, model: torch.nn.Module, optimizer: Any,
                    reader_state: dict | None = None, keep: int = 0) -> Path:
    rank = dist.get_rank() if dist.is_initialized() else 0
    final = root / f"{PREFIX}{step}"
    tmp = root / f".{PREFIX}{step}.tmp"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    _barrier()
    dcp.save(_state(model, optimizer, step, reader_state or {}), checkpoint_id=str(tmp))
    _barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if keep > 0:
            for old in list_checkpoints(root)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def _materialise_dense_state(optimizer: Any) -> None:
    """Create the dense optimizers' lazy state (Adam's moments and step) so that DCP, which
    loads in place into the state dict it is given, has somewhere to put it. TorchRec's
    init_state does that with a zero-gradient step; the fused optimizer's state exists already
    and is left alone (zero gradients for whole tables would cost their size)."""
    for _, opt in optimizer.optimizers:
        if isinstance(opt, KeyedOptimizerWrapper) and not opt.state:
            opt.init_state()
            opt.zero_grad(set_to_none=True)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: Any | None = None,
                    for_resume: bool = False) -> dict:
    """Load model (and optimizer) state in place; returns {"step", "reader", "rng"} of this rank.

    The model loads at any world size (DCP reshards the tables); resuming training also needs
    this rank's reader position, so it needs the world size the checkpoint was written with.
    """
    if not path.is_dir() or not (path / ".metadata").is_file():
        raise UserError(f"'{path}' is not a checkpoint folder (no DCP .metadata inside)")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    if optimizer is not None:
        _materialise_dense_state(optimizer)
    state = _state(model, optimizer, 0, {})
    # Partial: a rank with no entry of its own in the checkpoint (more ranks than it was
    # written by) keeps the defaults; that only matters when resuming, checked below.
    dcp.load(state, checkpoint_id=str(path), planner=DefaultLoadPlanner(allow_partial_load=True))
    if for_resume and state["world_size"] != world_size:
        raise UserError(f"checkpoint '{path}' was written by {state['world_size']} ranks; resume it with "
                        f"the same world size (this run has {world_size}); evaluation works at any size")
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optim"])
    mine = state[f"rank{rank}"]
    return {"step": int(state["step"]), "reader": mine["reader"], "rng": mine["rng"]}
