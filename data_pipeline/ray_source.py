"""Training batches from a Ray Data shard (the `dataset.source: ray_data` path under Ray Train).

Ray Train splits `ray.data.read_parquet(DIR/train)` into one equal-row shard per worker
(DataConfig's default streaming split), so Ray's own executors decode Parquet and the worker
only converts Arrow batches with the same `arrow_to_batch` as the shard reader: a batch
looks the same whichever path read it.
"""

from __future__ import annotations

from collections.abc import Iterator

from shardrec.configs.errors import UserError
from shardrec.data_pipeline.convert_arrow import Block
from shardrec.data_pipeline.reader import EpochPosition
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.data_pipeline.validate import Piece, Where, check_block
from torchrec.datasets.utils import Batch


class RayDataReader(EpochPosition):
    """Iterable of Batch over this worker's Ray Data shard, `num_batches` full batches per epoch.

    Every worker yields the same count (rows // world_size // batch_size), so collectives in
    the step never wait on a worker whose shard ran out. The position is kept as a batch
    count; resuming re-reads the epoch and skips that many batches.
    """

    def __init__(self, shard, schema: DatasetSchema, split: str, batch_size: int, world_size: int,
                 prefetch_batches: int = 4, on_bad_dense: str = "error"):
        rows = schema.splits.get(split, 0)
        self.shard, self.schema, self.batch_size, self.world_size = shard, schema, batch_size, world_size
        self.prefetch_batches, self.on_bad_dense, self.split = prefetch_batches, on_bad_dense, split
        self.num_batches = self.max_batches_any_rank = rows // world_size // batch_size
        if self.num_batches == 0:
            raise UserError(f"split '{split}' has {rows} rows: fewer than one batch of {batch_size} "
                            f"per worker for {world_size} workers")

    def __iter__(self) -> Iterator[Batch]:
        batches = self.shard.iter_batches(batch_size=self.batch_size, batch_format="pyarrow",
                                          drop_last=True, prefetch_batches=self.prefetch_batches)
        for i, table in enumerate(batches):
            if i >= self.num_batches:
                return
            if i >= self.start_batch:
                # Ray Data does not say which file a batch came from: name the batch instead.
                where = Where([Piece(f"Ray Data shard of split '{self.split}', batch {i} of epoch {self.epoch}",
                                     None, 0, table.num_rows)])
                block = check_block(Block(table, self.schema), where, self.on_bad_dense)
                yield block.batch(0, block.n)
