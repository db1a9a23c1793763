"""EmbeddingBagConfigs from a data set schema: one table per sparse feature."""

from __future__ import annotations

from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType

from data_pipeline.schema import DatasetSchema


def table_name(feature: str) -> str:
    return f"t_{feature}"


def table_configs(schema: DatasetSchema, embedding_dim: int,
                  pooling: PoolingType = PoolingType.SUM) -> list[EmbeddingBagConfig]:
    """One EmbeddingBagConfig per sparse feature, sized by schema.json.

    Each table is named `t_<feature>` and serves exactly its feature; the data set already
    maps ids into [0, num_embeddings).
    """
    return [
        EmbeddingBagConfig(
            name=table_name(f.name),
            embedding_dim=embedding_dim,
            num_embeddings=f.num_embeddings,
            feature_names=[f.name],
            pooling=pooling,
        )
        for f in schema.sparse
    ]
