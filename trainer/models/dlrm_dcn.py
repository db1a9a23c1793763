"""DLRM-DCNv2: the MLPerf Training recommendation benchmark model (MLPerf v3.0 onwards).

DLRM (Naumov et al. 2019, arXiv:1906.00091) with its dot interaction replaced by a stack of
low-rank DCNv2 cross layers (Wang et al. 2021, "DCN V2: Improved Deep & Cross Network",
arXiv:2008.13535), as in MLPerf's reference implementation, which is TorchRec's `DLRM_DCN`:

    dense (B, D) ──bottom MLP──► (B, E) ─┐
    KJT (F features) ──EBC──► (B, F, E) ─┴─► x0 = concat (B, (F+1) E)
        ──L low-rank cross layers x_{l+1} = x0 * (W_l (V_l x_l) + b_l) + x_l──► (B, (F+1) E)
        ──top MLP──► logits (B, 1)

`mlperf` is the reference configuration: 26 tables of dim 128 (Criteo 1TB, ids capped at
40M), bottom 512-256-128, 3 cross layers of rank 512, top 1024-1024-512-256-1.
`mlperf_schema()` gives the reference table sizes (its multi-hot bag sizes are recorded in
`source`); `shardrec plan` and the parameter-count test use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature
from shardrec.embeddings.tables import table_configs
from shardrec.trainer.models.common import materializable
from torchrec.models.dlrm import DLRM_DCN
from torchrec.modules.embedding_modules import EmbeddingBagCollection


@dataclass(frozen=True)
class DLRMDCNFlavor:
    embedding_dim: int
    bottom_mlp: tuple[int, ...]  # ends with embedding_dim
    top_mlp: tuple[int, ...]  # ends with 1
    cross_layers: int
    low_rank: int


FLAVORS = {
    "debug": DLRMDCNFlavor(8, (16, 8), (16, 1), cross_layers=2, low_rank=4),
    "small": DLRMDCNFlavor(16, (128, 64, 16), (256, 128, 1), cross_layers=3, low_rank=64),
    "mlperf": DLRMDCNFlavor(128, (512, 256, 128), (1024, 1024, 512, 256, 1),
                            cross_layers=3, low_rank=512),
}

# MLPerf Training DLRM-DCNv2 reference (torchrec_dlrm, `--num_embeddings_per_feature`):
# Criteo 1TB cardinalities of C1..C26 with ids capped at 40M rows per table.
MLPERF_TABLE_SIZES = (
    40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10,
    2209, 11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36,
)
# The reference's synthetic multi-hot bag size per feature (`--multi_hot_sizes`).
MLPERF_MULTI_HOT_SIZES = (3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27,
                          10, 3, 1, 1)


def mlperf_schema() -> DatasetSchema:
    """The MLPerf reference data set's schema: 13 dense features and C1..C26 at reference sizes."""
    return DatasetSchema(
        label="label",
        dense=[f"I{i}" for i in range(1, 14)],
        sparse=[SparseFeature(f"C{i + 1}", size, multi_hot=hot > 1)
                for i, (size, hot) in enumerate(zip(MLPERF_TABLE_SIZES, MLPERF_MULTI_HOT_SIZES))],
        source={"reference": "MLPerf Training DLRM-DCNv2 (Criteo 1TB, multi-hot)",
                "multi_hot_sizes": list(MLPERF_MULTI_HOT_SIZES)},
    )


def build_dlrm_dcn(schema: DatasetSchema, flavor: DLRMDCNFlavor, device: torch.device) -> DLRM_DCN:
    """TorchRec's DLRM_DCN over the schema's tables (sum pooling, as the reference)."""
    ebc = EmbeddingBagCollection(tables=table_configs(schema, flavor.embedding_dim), device=device)
    # LowRankCrossNet allocates with torch.empty and takes no device argument.
    with torch.device(device):
        model = DLRM_DCN(
            embedding_bag_collection=ebc,
            dense_in_features=len(schema.dense),
            dense_arch_layer_sizes=list(flavor.bottom_mlp),
            over_arch_layer_sizes=list(flavor.top_mlp),
            dcn_num_layers=flavor.cross_layers,
            dcn_low_rank_dim=flavor.low_rank,
            dense_device=device,
        )
    materializable(model.inter_arch.crossnet)
    return model
