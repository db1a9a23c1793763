"""Model registry: a name maps to a builder and its flavors (size presets).

    model = build_model(schema, ModelConfig(name="dlrm", flavor="debug"), torch.device("meta"))

Every model takes (dense (B, D) float32, KJT) and returns logits (B, 1); its sparse side is
one or more EmbeddingBagCollections (tables `t_<f>`, `lin_<f>`, `cross_<a>_x_<b>`) that
embeddings/ shards. Models know nothing of sharding; built on meta, every dense parameter is
initialised by a `reset_parameters()` that DistributedModelParallel calls. Each model has a
tiny `debug` flavor for tests and full ones (see `MODELS[name].flavors`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from shardrec.configs.errors import UserError
from shardrec.configs.tree import ModelConfig
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.trainer.models import (
    baselines,
    dcn,
    deepfm,
    dien,
    dlrm,
    dlrm_dcn,
    lightgcn,
    retrieval,
    sequence_ctr,
    sequential,
    wide_deep,
    xdeepfm,
)
from shardrec.trainer.models.common import FeatureLinear, LearnedDenseVector
from torch import nn
from torchrec.modules.mlp import Perceptron
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[DatasetSchema, Any, torch.device], nn.Module]
    flavors: dict[str, Any]
    # A baseline: what the zoo's models are compared against (bench/bench_models.py).
    baseline: bool = False
    # "ranking": (dense, KJT) -> logits on click data, trained by ClickTask; "retrieval":
    # KJT -> (user, item, negative, reg) on interactions data, trained by RetrievalTask;
    # "sequential": the same from each row's behaviour history, scored as next-item.
    family: str = "ranking"
    # TorchRec's TrainPipelineSparseDist traces the model with torch.fx to find its tables'
    # inputs; models with data-dependent shapes (padding histories to the batch's longest,
    # looking up rows of their own) cannot be traced and train under TrainPipelineBase.
    traceable: bool = True
    # Reads a behaviour history (a sequence feature of the data set; `--history N`).
    needs_history: bool = False
    # Bumped when the same weights start computing something else (a parameter-free term
    # added): a checkpoint written before is then refused, though its keys and shapes match.
    # 2 for din, bst, dien: FM's second-order term joined their logit.
    revision: int = 1


def _dlrm_family(build: Callable[[DatasetSchema, Any, torch.device], nn.Module]):
    """TorchRec's DLRM classes need a bottom MLP; with no dense features it would only learn
    a constant through its last bias, so that constant becomes one learned vector."""

    def wrapped(schema: DatasetSchema, flavor: Any, device: torch.device) -> nn.Module:
        model = build(schema, flavor, device)
        if not schema.dense:
            model.dense_arch = LearnedDenseVector(flavor.embedding_dim, device)
        return model

    return wrapped


# DLRM's own flavors, plus a compact one for data sets of ~100k rows (MovieLens 100K).
DLRM_FLAVORS = {**dlrm.FLAVORS, "compact": dlrm.DLRMFlavor(8, (32, 8), (64, 32, 1))}

MODELS: dict[str, ModelSpec] = {
    "dlrm": ModelSpec(_dlrm_family(dlrm.build_dlrm), DLRM_FLAVORS),
    "dlrm_dcn": ModelSpec(_dlrm_family(dlrm_dcn.build_dlrm_dcn), dlrm_dcn.FLAVORS),
    "deepfm": ModelSpec(deepfm.build_deepfm, deepfm.FLAVORS),
    "dcn": ModelSpec(dcn.build_dcn, dcn.DCN_FLAVORS),
    "dcnv2": ModelSpec(dcn.build_dcnv2, dcn.DCNV2_FLAVORS),
    "wide_deep": ModelSpec(wide_deep.build_wide_deep, wide_deep.FLAVORS),
    "xdeepfm": ModelSpec(xdeepfm.build_xdeepfm, xdeepfm.FLAVORS),
    "lr": ModelSpec(baselines.build_lr, baselines.LR_FLAVORS, baseline=True),
    "fm": ModelSpec(baselines.build_fm, baselines.FM_FLAVORS, baseline=True),
    "dnn": ModelSpec(baselines.build_dnn, baselines.DNN_FLAVORS, baseline=True),
    "din": ModelSpec(sequence_ctr.build_din, sequence_ctr.FLAVORS, traceable=False, needs_history=True,
                     revision=2),
    "bst": ModelSpec(sequence_ctr.build_bst, sequence_ctr.FLAVORS, traceable=False, needs_history=True,
                     revision=2),
    "dien": ModelSpec(dien.build_dien, dien.FLAVORS, traceable=False, needs_history=True, revision=2),
    "mf": ModelSpec(retrieval.build_mf, retrieval.MF_FLAVORS, family="retrieval", traceable=False),
    "ncf": ModelSpec(retrieval.build_ncf, retrieval.NEUMF_FLAVORS, family="retrieval", traceable=False),
    "two_tower": ModelSpec(retrieval.build_two_tower, retrieval.TWO_TOWER_FLAVORS, family="retrieval",
                           traceable=False),
    "sasrec": ModelSpec(sequential.build_sasrec, sequential.FLAVORS, family="sequential", traceable=False),
    "gru4rec": ModelSpec(sequential.build_gru4rec, sequential.FLAVORS, family="sequential", traceable=False),
    "lightgcn": ModelSpec(lightgcn.build_lightgcn, lightgcn.LIGHTGCN_FLAVORS, family="retrieval",
                          traceable=False),
}


def click_models() -> list[str]:
    """The ranking models that train on any click data set (no history needed): the zoo
    tests and benchmarks run every one of them on the same data."""
    return [n for n, spec in MODELS.items() if spec.family == "ranking" and not spec.needs_history]


def traceable(name: str) -> bool:
    """Whether TrainPipelineSparseDist can trace model `name` (see ModelSpec.traceable)."""
    spec = MODELS.get(name)
    return spec.traceable if spec else True


def revision(name: str) -> int:
    """The architecture revision of model `name` (ModelSpec.revision; 1 for unknown names)."""
    spec = MODELS.get(name)
    return spec.revision if spec else 1


def family(name: str) -> str:
    """"ranking", "retrieval" or "sequential" for a registered model name (ranking for unknown names, which
    build_model refuses with the list of models)."""
    spec = MODELS.get(name)
    return spec.family if spec else "ranking"


def add_flavor(model: str, name: str, flavor: Any) -> None:
    """Register one more flavor of a registered model (benchmarks, experiments), so that
    `--model.flavor=<name>` finds it."""
    if model not in MODELS:
        raise UserError(f"unknown model '{model}'; choose one of: {', '.join(MODELS)}")
    MODELS[model].flavors[name] = flavor


def build_model(schema: DatasetSchema, cfg: ModelConfig, device: torch.device) -> nn.Module:
    spec = MODELS.get(cfg.name)
    if spec is None:
        raise UserError(f"config key 'model.name': unknown model '{cfg.name}'; choose one of: {', '.join(MODELS)}")
    flavor = spec.flavors.get(cfg.flavor)
    if flavor is None:
        raise UserError(
            f"config key 'model.flavor': model '{cfg.name}' has no flavor '{cfg.flavor}'; "
            f"choose one of: {', '.join(spec.flavors)}"
        )
    pairs = _cross_pairs(cfg.cross_pairs)
    if pairs and hasattr(flavor, "cross_pairs"):
        # The configured crosses replace the flavor's (explicit and automatic) ones; none is
        # then left to add outside the model.
        flavor, pairs = dataclasses.replace(flavor, cross_pairs=tuple(pairs), auto_cross_features=0), []
    wide_keys = [key for key, on in (("model.cross_pairs", pairs), ("model.first_order", cfg.first_order)) if on]
    ranking = [n for n, s in MODELS.items() if s.family == "ranking"]
    if wide_keys and cfg.name not in ranking:
        raise UserError(f"config key '{wide_keys[0]}': model '{cfg.name}' is not one of the click models "
                        f"({', '.join(ranking)})")
    if cfg.embedding_dim:
        flavor = _with_embedding_dim(cfg.name, flavor, cfg.embedding_dim)
    model = spec.build(schema, flavor, device)
    if cfg.batch_norm or cfg.dropout:
        wrap_hidden_layers(model, cfg.batch_norm, cfg.dropout)
    if cfg.first_order and any(isinstance(m, FeatureLinear) for m in model.modules()):
        raise UserError(f"config key 'model.first_order': model '{cfg.name}' has a first-order term of its own")
    if cfg.first_order or pairs:
        crosses = wide_deep.Crosses.of(schema, wide_deep.checked_pairs(schema, pairs), CROSS_HASH_SIZE) if pairs else None
        model = WithWideTerms(model, FeatureLinear(schema, device) if cfg.first_order else None, crosses, device)
    return model


# Rows of a cross table added to a model (not wide_deep's own, which its flavor sizes) when
# the product space |V_a| |V_b| is larger: Wide&Deep's `small` flavor's size.
CROSS_HASH_SIZE = wide_deep.FLAVORS["small"].cross_hash_size


def _cross_pairs(texts: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for pair in texts:
        names = pair.split(":")
        if len(names) != 2 or not all(names):
            raise UserError(f"config key 'model.cross_pairs': '{pair}' is not a pair 'a:b' of feature names")
        pairs.append((names[0], names[1]))
    return pairs


class WithWideTerms(nn.Module):
    """A ranking model's logit plus Wide&Deep's wide terms: a first-order term
    (`model.first_order`) and cross products (`model.cross_pairs`), either or both.

        forward(dense (B, D), kjt) -> model(dense, kjt) + linear(dense, kjt)
                                      + sum_{(a, b)} w_ab(cross(id_a, id_b))      (B, 1)

    Their scalar tables `lin_<f>` and `cross_<a>_x_<b>` form more EmbeddingBagCollections,
    which embeddings/ plans and shards with the model's own."""

    def __init__(self, model: nn.Module, linear: FeatureLinear | None, crosses: wide_deep.Crosses | None = None,
                 device: torch.device | None = None):
        super().__init__()
        self.model = model
        self.linear = linear
        self.crosses = crosses
        self.cross = crosses.collection(device) if crosses else None

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor):
        out = self.model(dense, kjt)
        if isinstance(out, tuple):  # (logits, auxiliary loss): DIEN in training
            return (self._add_terms(out[0], dense, kjt), *out[1:])
        return self._add_terms(out, dense, kjt)

    def _add_terms(self, out: torch.Tensor, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        if self.linear is not None:
            out = out + self.linear(dense, kjt)
        if self.cross is not None:
            out = out + self.crosses.term(self.cross, kjt)
        return out


def _with_embedding_dim(name: str, flavor: Any, dim: int) -> Any:
    """`flavor` with rows `dim` wide; a bottom MLP (DLRM's, which must end at the row width
    for the interaction) ends at `dim` too."""
    if not hasattr(flavor, "embedding_dim"):
        raise UserError(f"config key 'model.embedding_dim': model '{name}' has no embedding width to set")
    changes: dict[str, Any] = {"embedding_dim": dim}
    if getattr(flavor, "bottom_mlp", None):
        changes["bottom_mlp"] = (*flavor.bottom_mlp[:-1], dim)
    return dataclasses.replace(flavor, **changes)


class HiddenBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over a hidden layer's units (B, H) that passes a one-row training batch
    (the last of a split may be one) through its running statistics instead of failing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                            False, 0.0, self.eps)
        return super().forward(x)


def wrap_hidden_layers(model: nn.Module, batch_norm: bool, dropout: float) -> nn.Module:
    """Every ReLU hidden layer of the model's TorchRec MLPs (deep towers, DLRM's bottom and top
    MLPs; output units and cross layers are left as they are) becomes Linear -> [BatchNorm]
    -> ReLU -> [Dropout(p)]. TorchRec's MLP has neither option, so each such Perceptron's
    activation becomes that sequence. Dropout adds no parameter, so checkpoints and exports
    keep their keys; batch norm's are named `..._activation_fn.0.*`. eval() turns dropout
    off and makes batch norm use its running statistics."""
    for m in model.modules():
        if isinstance(m, Perceptron) and m._activation_fn is torch.relu:
            layers = [nn.ReLU()]
            if batch_norm:
                layers.insert(0, HiddenBatchNorm(m._linear.out_features, device=m._linear.weight.device))
            if dropout:
                layers.append(nn.Dropout(dropout))
            m._activation_fn = nn.Sequential(*layers)
    return model
