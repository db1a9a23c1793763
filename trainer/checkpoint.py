"""Sharded checkpoints with torch.distributed.checkpoint (DCP), saved atomically, loaded strictly.

A checkpoint is the folder RUN/checkpoints/step_<N>/ holding the model (each rank writes its
own table shards), the combined optimizer (fused FBGEMM state included), per rank its RNG
state, and `shardrec.json`: the step, world size, batch sizes, the last loss, a fingerprint
of model, flavor and data set schema, and the training reader's position, which does not
depend on the world size (data_pipeline/position.py): DCP reshards model and optimizer, so
a checkpoint resumes on any number of ranks.

Saving: every rank writes into the hidden `.step_<N>.tmp/`; rank 0 adds shardrec.json and
renames it into place (a step saved again is first moved aside to `.step_<N>.old`, so there
is never a moment without a complete step_<N>). Leftover tmp/old folders of a crashed save
are removed at the next save (the run folder's lock rules out a concurrent writer). Nothing
non-finite is ever written. "Complete" means `.metadata` and shardrec.json both exist;
`list_checkpoints` skips anything else with a warning.

Loading: the fingerprint is compared first (an error names the settings that differ), then
every key and shape of the model (and optimizer) against the checkpoint's metadata, and only
then is anything read, through trainer/safe_dcp.py, which never runs code from the folder.

Ranks hold different state-dict keys (a table-wise table lives on one rank), so nothing here
runs a per-key collective; DCP's own planner coordinates the write.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from shardrec.configs.errors import UserError
from shardrec.configs.tree import ModelConfig
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.trainer.registry import revision
from shardrec.trainer.safe_dcp import read_metadata_file, safe_load
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.checkpoint._nested_dict import flatten_state_dict
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.tensor import DTensor
from torchrec.optim.keyed import KeyedOptimizerWrapper

log = logging.getLogger(__name__)

PREFIX = "step_"
BEST = "best"  # checkpoints/best/: the best validation score's weights (early stopping)
INFO_FILE = "shardrec.json"
FORMAT, VERSION = "shardrec-checkpoint", 1


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


# ---------------------------------------------------------------------------------------
# What a checkpoint is for: the fingerprint and the settings a resume must keep.

def fingerprint(model: ModelConfig, schema: DatasetSchema) -> dict:
    """What the weights are shaped by: model, flavor and the data set's features and table sizes."""
    found = {"model.name": model.name, "model.flavor": model.flavor, "dataset.label": schema.label,
             "dataset.dense": list(schema.dense),
             "dataset.sparse": {f.name: [f.num_embeddings, f.multi_hot] for f in schema.sparse}}
    if model.cross_pairs:  # only when set, so checkpoints from before the key still match
        found["model.cross_pairs"] = list(model.cross_pairs)
    found.update({"model.first_order": model.first_order, "model.embedding_dim": model.embedding_dim})
    if (rev := revision(model.name)) > 1:  # only then, so checkpoints of unchanged models still match
        found["model.revision"] = rev
    return found


# Fingerprint keys that checkpoints written before them lack: not compared with those (the
# strict key and shape check of the load still catches a model they would change).
_LATER_KEYS = {"model.first_order", "model.embedding_dim"}


def _differences(saved: dict, now: dict) -> list[str]:
    out = []
    for key in [*now, *(k for k in saved if k not in now)]:
        a, b = saved.get(key), now.get(key)
        if a == b or (key in _LATER_KEYS and key not in saved):
            continue
        if key == "model.revision":
            out.append(f"the model's revision (checkpoint: {a or 1}, now: {b or 1}: model '{now.get('model.name')}' "
                       "computes differently since; retrain, or use the shardrec version that wrote it)")
            continue
        if key == "dataset.sparse" and isinstance(a, dict):
            changed = [f"{n} {a[n][0]} -> {b[n][0]}" for n in b if n in a and a[n] != b[n]][:5]
            gone, new = sorted(set(a) - set(b))[:5], sorted(set(b) - set(a))[:5]
            detail = "; ".join(filter(None, [
                f"table sizes / multi-hot differ: {', '.join(changed)}" if changed else "",
                f"features only in the checkpoint: {', '.join(gone)}" if gone else "",
                f"features only in this data set: {', '.join(new)}" if new else ""]))
            out.append(f"the data set's sparse features ({detail})")
        else:
            out.append(f"{key} (checkpoint: {a!r}, now: {b!r})")
    return out


def read_info(path: Path) -> dict:
    """The checkpoint's shardrec.json, checked to be one."""
    file = path / INFO_FILE
    try:
        info = json.loads(file.read_text())
    except FileNotFoundError:
        raise UserError(f"'{path}' is not a complete shardrec checkpoint (no {INFO_FILE}: an interrupted "
                        "save, or written by something else)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{file}: unreadable ({e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT or not isinstance(info.get("fingerprint"), dict):
        raise UserError(f"{file}: not a shardrec checkpoint description (format '{FORMAT}' expected)")
    return info


def check_fingerprint(path: Path, info: dict, expected: dict) -> None:
    diffs = _differences(info["fingerprint"], expected)
    if diffs:
        raise UserError(f"checkpoint '{path}' was written for another model or data set: "
                        + "; ".join(diffs) + ". Use the settings it was trained with, or another checkpoint")


def check_resumable(path: Path, info: dict, world_size: int, global_batch_size: int) -> None:
    """Any world size may resume a checkpoint, with the same global batch: a step must keep
    meaning the same number of rows, for the learning-rate schedule and max_steps."""
    if info.get("global_batch_size") != global_batch_size:
        hint = (f"; at world size {world_size} that is train.batch_size={info.get('global_batch_size') // world_size} "
                f"(or set train.global_batch_size={info.get('global_batch_size')})"
                if isinstance(info.get("global_batch_size"), int) and info["global_batch_size"] % world_size == 0 else "")
        raise UserError(f"config key 'train.batch_size' (or train.global_batch_size): checkpoint '{path}' was "
                        f"trained with a global batch of {info.get('global_batch_size')} rows, this run has "
                        f"{global_batch_size}. Resume with the same global batch size{hint}")


# ---------------------------------------------------------------------------------------
# The folder of checkpoints.

def is_complete(path: Path) -> bool:
    return (path / ".metadata").is_file() and (path / INFO_FILE).is_file()


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under root, oldest first; incomplete step folders are skipped
    with a warning."""
    if not root.is_dir():
        return []
    found = sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
                    and p.name[len(PREFIX):].isdigit()), key=lambda p: int(p.name[len(PREFIX):]))
    complete = [p for p in found if is_complete(p)]
    for p in found:
        if not is_complete(p):
            log.warning("skipping incomplete checkpoint %s (no .metadata or %s)", p, INFO_FILE)
    return complete


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def resolve_checkpoint(run_dir: Path, checkpoint: str | None) -> Path:
    """What `--checkpoint` names: a checkpoint folder, `best` (the newest in checkpoints/best,
    kept by early stopping), or by default the run's newest complete checkpoint."""
    root = Path(run_dir) / "checkpoints"
    if checkpoint == BEST:
        path = latest_checkpoint(root / BEST)
    elif checkpoint:
        path = Path(checkpoint)
    else:
        path = latest_checkpoint(root)
    if path is None:
        raise UserError(f"run folder '{run_dir}' has no complete {'best ' if checkpoint == BEST else ''}checkpoint")
    return path


def _local_tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, ShardedTensor):
        return [s.tensor for s in value.local_shards()]
    if isinstance(value, DTensor):
        return [value.to_local()]
    return [value] if isinstance(value, torch.Tensor) else []


def first_nonfinite(state: dict) -> str | None:
    """The first key of a (flat) model state dict whose local values hold a NaN or inf."""
    for key, value in state.items():
        for t in _local_tensors(value):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return key
    return None


def _state(model: torch.nn.Module, optimizer: Any | None, rng: bool) -> dict:
    """The DCP state dict; on load it is the template DCP fills in place, so its keys are fixed."""
    # Per-rank entries carry the rank in their key: DCP keeps one copy of equal keys.
    state: dict = {"model": model.state_dict()}
    if rng:
        state[f"rank{_rank()}"] = {"rng": torch.get_rng_state()}
    if optimizer is not None:
        state["optim"] = optimizer.state_dict()
    return state


def _clean_leftovers(root: Path) -> None:
    for p in root.glob(f".{PREFIX}*"):
        if p.is_dir() and (p.name.endswith(".tmp") or p.name.endswith(".old")):
            shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(root: Path, step: int, model: torch.nn.Module, optimizer: Any, info: dict,
                    keep: int = 0) -> Path:
    """Write step_<step> (see the module docstring); `info` goes into shardrec.json (the
    fingerprint, world size, global batch size, reader position). Keeps the newest `keep`
    (0 = all)."""
    rank = _rank()
    final = root / f"{PREFIX}{step}"
    tmp, old = root / f".{PREFIX}{step}.tmp", root / f".{PREFIX}{step}.old"
    state = _state(model, optimizer, rng=True)
    bad = first_nonfinite(state["model"])
    if bad is not None:  # every rank checks its own shards; a rank that raises ends the job
        raise UserError(f"not saving checkpoint step_{step}: parameter '{bad}' holds NaN or inf (training "
                        "diverged); the previous checkpoints are kept")
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(root)
    _barrier()
    dcp.save(state, checkpoint_id=str(tmp))
    _barrier()
    if rank == 0:
        payload = {"format": FORMAT, "version": VERSION, "step": step, **info}
        (tmp / INFO_FILE).write_text(json.dumps(payload, indent=2) + "\n")
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        if keep > 0:
            for stale in list_checkpoints(root)[:-keep]:
                shutil.rmtree(stale, ignore_errors=True)
    _barrier()
    return final


# ---------------------------------------------------------------------------------------
# Loading.

def _materialise_dense_state(optimizer: Any) -> None:
    """Create the dense optimizers' lazy state (Adam's moments and step) so that DCP, which
    loads in place into the state dict it is given, has somewhere to put it. TorchRec's
    init_state does that with a zero-gradient step; the fused optimizer's state exists already
    and is left alone (zero gradients for whole tables would cost their size)."""
    for _, opt in optimizer.optimizers:
        if isinstance(opt, KeyedOptimizerWrapper) and not opt.state:
            opt.init_state()
            opt.zero_grad(set_to_none=True)


def _check_keys(path: Path, template: dict, prefixes: tuple[str, ...]) -> None:
    """Every key and shape of the template must be in the checkpoint, and every checkpoint key
    under `prefixes` in the template; otherwise a UserError lists the first offenders."""
    saved = read_metadata_file(str(path / ".metadata")).state_dict_metadata
    flat, _ = flatten_state_dict(template)
    missing = [k for k in flat if k not in saved]
    unexpected = [k for k in saved if k.startswith(prefixes) and k not in flat]
    misshaped = []
    for key, value in flat.items():
        meta = saved.get(key)
        if isinstance(value, torch.Tensor) and isinstance(meta, TensorStorageMetadata):
            if tuple(meta.size) != tuple(value.size()):
                misshaped.append(f"{key} (checkpoint {tuple(meta.size)}, model {tuple(value.size())})")
    if missing or unexpected or misshaped:
        parts = [f"{name}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)} in all)"
                 for name, keys in (("missing from the checkpoint", missing), ("unexpected in the checkpoint",
                                    unexpected), ("of another shape", misshaped)) if keys]
        raise UserError(f"checkpoint '{path}' does not match this model and optimizer; keys " + "; ".join(parts)
                        + ". Check model.name, model.flavor, the data set's table sizes and the optimizers "
                        "(embeddings.optimizer, optimizer.name) against the run that wrote it")


def load_checkpoint(path: Path, model: torch.nn.Module, expected: dict, optimizer: Any | None = None,
                    for_resume: bool = False) -> dict:
    """Load model (and optimizer) state in place, strictly; returns {"step", "info", "rng"}:
    with `for_resume`, "rng" is this rank's RNG state (None for a rank the checkpoint's world
    did not have), the reader position is info["reader"].

    `expected` is `fingerprint(...)` of this run. Model and optimizer load at any world size
    (DCP reshards the tables); `check_resumable` checks the batch size.
    """
    if not path.is_dir() or not (path / ".metadata").is_file():
        raise UserError(f"'{path}' is not a checkpoint folder (no DCP .metadata inside)")
    info = read_info(path)
    check_fingerprint(path, info, expected)
    if optimizer is not None:
        _materialise_dense_state(optimizer)
    saved_ranks = int(info.get("world_size", 1))
    state = _state(model, optimizer, rng=for_resume and _rank() < saved_ranks)
    prefixes = ("model.",) + (("optim.",) if optimizer is not None else ())
    _check_keys(path, state, prefixes)
    safe_load(state, str(path))
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optim"])
    mine = state.get(f"rank{_rank()}")
    return {"step": int(info["step"]), "info": info, "rng": mine["rng"] if mine else None}
