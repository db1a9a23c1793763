"""DLRM (Naumov et al. 2019, "Deep Learning Recommendation Model for Personalization and
Recommendation Systems", arXiv:1906.00091), using TorchRec's reference modules.

    dense (B, D) ──bottom MLP──► (B, E) ─┐
    KJT (F features) ──EBC──► (B, F, E) ─┴─► pairwise dots (B, F(F+1)/2) ++ bottom (B, E)
                                              ──top MLP──► logits (B, 1)

TorchRec's `DLRM` is the model of the paper (dot interaction without self-pairs, the
bottom output concatenated to the dots); shardrec only supplies the sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.embeddings.tables import table_configs
from torchrec.models.dlrm import DLRM
from torchrec.modules.embedding_modules import EmbeddingBagCollection


@dataclass(frozen=True)
class DLRMFlavor:
    embedding_dim: int
    bottom_mlp: tuple[int, ...]  # ends with embedding_dim
    top_mlp: tuple[int, ...]  # ends with 1


FLAVORS = {
    "debug": DLRMFlavor(8, (16, 8), (16, 1)),
    "small": DLRMFlavor(16, (128, 64, 16), (256, 128, 1)),
    # The DLRM paper's Criteo Kaggle benchmark configuration.
    "kaggle": DLRMFlavor(16, (512, 256, 64, 16), (512, 256, 1)),
    # MLPerf training v1.0 DLRM (dot interaction) sizes.
    "mlperf": DLRMFlavor(128, (512, 256, 128), (1024, 1024, 512, 256, 1)),
    # The training-speed benchmark's shape (configs/bench_dlrm.yaml, bench/bench_train.py).
    "bench": DLRMFlavor(64, (512, 256, 64), (512, 256, 1)),
}


def build_dlrm(schema: DatasetSchema, flavor: DLRMFlavor, device: torch.device) -> DLRM:
    """DLRM over the schema's tables; pass device=meta and let embeddings/ place it."""
    ebc = EmbeddingBagCollection(tables=table_configs(schema, flavor.embedding_dim), device=device)
    return DLRM(
        embedding_bag_collection=ebc,
        dense_in_features=len(schema.dense),
        dense_arch_layer_sizes=list(flavor.bottom_mlp),
        over_arch_layer_sizes=list(flavor.top_mlp),
        dense_device=device,
    )
