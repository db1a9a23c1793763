"""Training batches of (user, positive item, negative item) for the retrieval models.

A ShardReader reads this rank's share of the interactions (row groups balanced over ranks,
shuffle window, exact mid-epoch position); each of its batches becomes a catalogue batch
(data_pipeline/interactions.py) with one negative per row from the NegativeSampler (with
`all_positions`, a sequence model's: one per supervised position of the row's history, that
is max(history length, 1)). The draw for batch k of epoch e on rank r is seeded by (seed, r,
e, k), so a run resumed mid-epoch sees the same negatives it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from shardrec.data_pipeline.interactions import ITEM, USER, Catalogue
from shardrec.data_pipeline.negatives import NegativeSampler
from shardrec.data_pipeline.prefetch import prefetch
from shardrec.data_pipeline.reader import ShardReader
from torchrec.datasets.utils import Batch


class RetrievalReader:
    """Iterable of catalogue Batches; position, epochs and len() are the inner reader's."""

    def __init__(self, inner: ShardReader, catalogue: Catalogue, sampler: NegativeSampler, seed: int,
                 prefetch_batches: int, history: tuple[str, ...] = (), all_positions: bool = False):
        self.inner, self.catalogue, self.sampler = inner, catalogue, sampler
        self.history = history  # behaviour-history columns carried into the batch (sequence models)
        self.all_positions = all_positions  # negatives for every position of history[0]
        self.seed, self.prefetch_batches = seed, prefetch_batches
        self.inner.prefetch_batches = 0  # the conversion below runs in this reader's prefetch thread

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name: str):
        # set_epoch, state_dict, load_state_dict, start_batch, describe_batch, ...
        return getattr(self.inner, name)

    def _batches(self) -> Iterator[Batch]:
        for k, batch in enumerate(self.inner, start=self.inner.start_batch):
            kjt = batch.sparse_features
            users, items = kjt[USER].values().numpy(), kjt[ITEM].values().numpy()
            self.sampler.rng = np.random.default_rng([self.seed, self.inner.rank, self.inner.epoch, k])
            history = {h: kjt[h] for h in self.history}
            if not self.all_positions:
                yield self.catalogue.batch(users, items, self.sampler.sample(users, items), history)
                continue
            counts = np.maximum(history[self.history[0]].lengths().numpy(), 1)
            negatives = self.sampler.sample(np.repeat(users, counts), np.repeat(items, counts))
            yield self.catalogue.batch(users, items, negatives, history, negative_counts=counts)

    def __iter__(self) -> Iterator[Batch]:
        return prefetch(self._batches(), self.prefetch_batches)
