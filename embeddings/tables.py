"""EmbeddingBagConfigs from a data set schema: one table per sparse feature."""

from __future__ import annotations

from shardrec.data_pipeline.schema import DatasetSchema
from torch import nn
from torchrec.modules.embedding_configs import BaseEmbeddingConfig, EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

COLLECTIONS = (EmbeddingBagCollection, EmbeddingCollection)


def model_table_configs(model: nn.Module) -> list[BaseEmbeddingConfig]:
    """The configs of every table of a (meta-built) model: pooled (EmbeddingBagCollection)
    and unpooled (EmbeddingCollection, behaviour histories) alike."""
    out: list[BaseEmbeddingConfig] = []
    for m in model.modules():
        if isinstance(m, EmbeddingBagCollection):
            out += m.embedding_bag_configs()
        elif isinstance(m, EmbeddingCollection):
            out += m.embedding_configs()
    return out


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


# Width of the tables that hold scalar (first-order) weights. FBGEMM's fused kernels, CPU
# and CUDA, refuse a table whose (local) width is not a multiple of 4, so a weight w(id) is
# stored as 4 columns, all initialised to 0, and read as their mean: the 4 columns then get
# equal gradients and stay equal, and under (row-wise) Adagrad, whose step does not depend on
# the gradient's scale, they train exactly like one 1-wide weight.
LINEAR_WIDTH = 4


def linear_table_name(feature: str) -> str:
    return f"lin_{feature}"


def scalar_table(name: str, num_embeddings: int, feature: str) -> EmbeddingBagConfig:
    """A table of scalar weights (LINEAR_WIDTH columns read as their mean), zero-initialised."""
    return EmbeddingBagConfig(name=name, embedding_dim=LINEAR_WIDTH, num_embeddings=num_embeddings,
                              feature_names=[feature], pooling=PoolingType.SUM,
                              weight_init_min=0.0, weight_init_max=0.0)


def linear_table_configs(schema: DatasetSchema) -> list[EmbeddingBagConfig]:
    """Tables `lin_<feature>` of first-order (linear) weights w_f(id), see LINEAR_WIDTH.

    Sum pooling: a multi-hot bag is an indicator vector with several ones, so its linear
    term is the sum of their weights. A separate collection from `table_configs` so that
    the weights are sharded (and optimised) like any other table.
    """
    return [scalar_table(linear_table_name(f.name), f.num_embeddings, f.name) for f in schema.sparse]


def cross_feature_name(a: str, b: str) -> str:
    """Name of the (model-computed) cross-product feature of sparse features a and b."""
    return f"{a}_x_{b}"


def cross_table_configs(pairs: list[tuple[str, str]], sizes: list[int]) -> list[EmbeddingBagConfig]:
    """Scalar-weight tables `cross_<a>_x_<b>` for Wide&Deep's cross-product features."""
    return [scalar_table(f"cross_{cross_feature_name(a, b)}", size, cross_feature_name(a, b))
            for (a, b), size in zip(pairs, sizes)]
