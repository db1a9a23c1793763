"""Model registry: a name maps to a builder and its flavors (size presets).

    model = build_model(schema, ModelConfig(name="dlrm", flavor="debug"), torch.device("meta"))

Every model takes (dense (B, D) float32, KJT) and returns logits (B, 1); its sparse side is
an EmbeddingBagCollection that embeddings/ shards. Models know nothing of sharding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from configs.errors import UserError
from configs.tree import ModelConfig
from data_pipeline.schema import DatasetSchema
from trainer.models import dlrm


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[DatasetSchema, Any, torch.device], nn.Module]
    flavors: dict[str, Any]


MODELS: dict[str, ModelSpec] = {
    "dlrm": ModelSpec(dlrm.build_dlrm, dlrm.FLAVORS),
}


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
    return spec.build(schema, flavor, device)
