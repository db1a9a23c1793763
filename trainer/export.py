"""A trained model out of its sharded checkpoint: one process, no TorchRec sharding.

`load_unsharded(run_dir)` builds the run's model as plain modules on the CPU and loads a DCP
checkpoint into it (DCP reassembles every table from the shards any number of ranks wrote).
`export_run` writes that model as a torch.export program taking plain tensors, plus a
weights-only state dict, the schema, the run's config and the data set's transforms, so a
server needs neither TorchRec's sharding nor shardrec's config code to score rows.

The exported program's inputs (B rows, F = the schema's sparse features, in schema order):
    dense   float32 [B, n_dense]
    values  int64   [N]        every feature's ids, feature by feature, row by row within one
    lengths int64   [F * B]    ids per (feature, row), feature-major (TorchRec's KJT layout)
and its output is the click probability, float32 [B].
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from shardrec.configs.errors import UserError
from shardrec.configs.loader import dump_yaml, load_config
from shardrec.configs.tree import Config
from shardrec.data_pipeline.schema import SCHEMA_FILE, DatasetSchema, load_schema
from shardrec.trainer.checkpoint import fingerprint, load_checkpoint, resolve_checkpoint
from shardrec.trainer.registry import build_model, family
from shardrec.trainer.task import ClickTask
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

PROGRAM, WEIGHTS, MANIFEST = "model.pt2", "weights.pt", "export.json"
# What the data set folder may hold besides its shards, copied beside the model.
DATASET_EXTRAS = ("transforms.json", "vocab")


class Scorer(nn.Module):
    """The model on plain tensors: (dense [B, n_dense], values [N], lengths [F*B]) -> p [B]."""

    def __init__(self, model: nn.Module, keys: list[str]):
        super().__init__()
        self.model, self.keys = model, list(keys)

    def forward(self, dense: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        sparse = KeyedJaggedTensor(keys=self.keys, values=values.long(), lengths=lengths.long())
        return torch.sigmoid(self.model(dense, sparse).squeeze(-1).float())


@dataclass
class Loaded:
    scorer: Scorer
    cfg: Config
    schema: DatasetSchema
    checkpoint: Path
    step: int


def load_unsharded(run_dir: str | Path, checkpoint: str | None = None) -> Loaded:
    """The run's model as plain CPU modules with a checkpoint's weights, in eval mode."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"'{run_dir}' is not a run folder (no config.yaml)")
    cfg = load_config(str(run_dir / "config.yaml"))
    if family(cfg.model.name) == "retrieval":
        raise UserError(f"'{run_dir}' trained the retrieval model '{cfg.model.name}': export and predict take "
                        "ranking models; `shardrec recommend --run-dir ... --k K --out FILE` serves its top-K lists")
    schema = load_schema(cfg.dataset.path)
    path = resolve_checkpoint(run_dir, checkpoint)
    task = ClickTask(build_model(schema, cfg.model, torch.device("cpu")))
    step = load_checkpoint(path, task, fingerprint(cfg.model, schema))["step"]
    return Loaded(Scorer(task.model, schema.sparse_names).eval(), cfg, schema, path, step)


def example_inputs(schema: DatasetSchema, rows: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs of `rows` rows with one id 0 per feature (what export traces with)."""
    features = len(schema.sparse_names)
    return (torch.zeros(rows, len(schema.dense)), torch.zeros(features * rows, dtype=torch.int64),
            torch.ones(features * rows, dtype=torch.int64))


def export_program(scorer: Scorer, schema: DatasetSchema) -> torch.export.ExportedProgram:
    """torch.export with a dynamic number of rows and of ids."""
    rows = torch.export.Dim("rows", min=1, max=1 << 24)
    ids = torch.export.Dim("ids", min=1, max=1 << 40)
    shapes = ({0: rows}, {0: ids}, {0: len(schema.sparse_names) * rows})
    # strict=False: trace the Python (KJT construction) instead of Dynamo-capturing it.
    return torch.export.export(scorer, example_inputs(schema), dynamic_shapes=shapes, strict=False)


SNIPPET = '''import torch

program = torch.export.load("{out}/model.pt2").module()
B = 4  # rows; F = {features} sparse features in this order: {keys}
dense = torch.zeros(B, {dense})                    # float32, columns: {dense_names}
lengths = torch.ones({features} * B, dtype=torch.int64)  # ids per (feature, row), feature-major
values = torch.zeros(int(lengths.sum()), dtype=torch.int64)  # the ids, in the same order
with torch.inference_mode():
    scores = program(dense, values, lengths)       # click probabilities, float32 [B]
'''


def export_run(run_dir: str | Path, out: str | Path, checkpoint: str | None = None,
               overwrite: bool = False) -> dict:
    """Write OUT/{model.pt2, weights.pt, schema.json, config.yaml, export.json, README.md}
    (and the data set's transforms.json and vocab/ when it has them); returns the manifest."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"output folder '{out}' already exists (pass --overwrite to replace it)")
    if out.exists() and not (out / MANIFEST).is_file():
        raise UserError(f"--overwrite replaces only an earlier export; '{out}' has no {MANIFEST}")
    loaded = load_unsharded(run_dir, checkpoint)
    schema = loaded.schema
    program = export_program(loaded.scorer, schema)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        torch.export.save(program, tmp / PROGRAM)
        torch.save(loaded.scorer.model.state_dict(), tmp / WEIGHTS)
        dataset = Path(loaded.cfg.dataset.path)
        shutil.copy(dataset / SCHEMA_FILE, tmp / SCHEMA_FILE)
        for extra in DATASET_EXTRAS:
            if (dataset / extra).is_dir():
                shutil.copytree(dataset / extra, tmp / extra)
            elif (dataset / extra).is_file():
                shutil.copy(dataset / extra, tmp / extra)
        (tmp / "config.yaml").write_text(dump_yaml(loaded.cfg))
        manifest = {
            "model": loaded.cfg.model.name, "flavor": loaded.cfg.model.flavor,
            "checkpoint": str(loaded.checkpoint), "step": loaded.step,
            "inputs": {"dense": schema.dense, "sparse": schema.sparse_names,
                       "layout": "dense float32 [B, n_dense]; values int64 [N]; lengths int64 [F*B] feature-major"},
            "output": "click probability float32 [B]", "torch": torch.__version__,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        snippet = SNIPPET.format(out=out, features=len(schema.sparse_names), keys=", ".join(schema.sparse_names),
                                 dense=len(schema.dense), dense_names=", ".join(schema.dense) or "(none)")
        (tmp / "README.md").write_text(
            f"# {manifest['model']}/{manifest['flavor']} from {loaded.checkpoint}\n\n"
            "Load and score a batch (torch only; no TorchRec or shardrec needed):\n\n"
            f"```python\n{snippet}```\n\n`weights.pt` is the same model's state dict "
            "(`torch.load(..., weights_only=True)`); `schema.json` names the columns, and "
            "`transforms.json` / `vocab/`, when present, map raw values to ids as `convert table` did.\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
