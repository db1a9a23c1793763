"""Implicit-feedback data sets (`shardrec convert interactions`) as the retrieval models read them.

    DIR/schema.json        sparse: user_id (U rows), item_id (I rows), user and item side features;
                           `interactions`: which features are which, U, I, the category feature
    DIR/{train,valid,test}/ one row per (user, item) interaction, label 1
    DIR/users.parquet      row u = user u: raw_user and its side features
    DIR/items.parquet      row i = item i: raw_item, its side features and train_count

Every training batch is rebuilt from its (user, item) pairs through the catalogue: the
side features come from users.parquet / items.parquet, and each row gets one sampled
negative item under the keys `neg_item_id`, `neg_<item feature>` (the item tables serve both
keys, so positives and negatives share their embeddings). Evaluation builds its batches of
users and of items the same way, so one code path makes every KJT a retrieval model sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.schema import DatasetSchema, split_files
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

NEG = "neg_"
USER, ITEM = "user_id", "item_id"


def require_interactions(schema: DatasetSchema, path: str | Path, model: str) -> dict:
    """schema.interactions, or a UserError saying that `model` needs such a data set."""
    if not schema.interactions:
        raise UserError(f"model '{model}' trains on implicit feedback, but '{path}' is a click data set; make one "
                        "with `shardrec convert interactions --input FILE --user COL --item COL --out DIR`")
    return schema.interactions


def item_keys(info: dict) -> list[str]:
    return [ITEM, *info.get("item_features", [])]


def user_keys(info: dict) -> list[str]:
    return [USER, *info.get("user_features", [])]


def kjt_keys(info: dict) -> list[str]:
    """Every key of a retrieval batch's KJT, in order: user, user features, item, item
    features, then the negative item and its features."""
    items = item_keys(info)
    return [*user_keys(info), *items, *[NEG + k for k in items]]


@dataclass
class Catalogue:
    """Users and items of a data set: side features by index, popularity, categories."""

    info: dict
    users: pa.Table  # row u: the side features of user u
    items: pa.Table  # row i: the side features of item i (and train_count)
    train_count: np.ndarray  # (I,) int64 training interactions per item

    @property
    def num_users(self) -> int:
        return int(self.info["num_users"])

    @property
    def num_items(self) -> int:
        return int(self.info["num_items"])

    def category(self) -> np.ndarray | None:
        """(I,) int64: each item's category id (the first of a multi-hot list; -1 = none),
        or None when the data set names no category feature."""
        name = self.info.get("category")
        if not name:
            return None
        col = self.items.column(name).combine_chunks()
        if pa.types.is_list(col.type):
            first = pa.compute.list_element(pa.compute.if_else(pa.compute.greater(pa.compute.list_value_length(col), 0),
                                                               col, pa.scalar([-1], col.type)), 0)
            return first.to_numpy(zero_copy_only=False).astype(np.int64)
        return col.to_numpy(zero_copy_only=False).astype(np.int64)

    def kjt(self, users: np.ndarray, items: np.ndarray, negatives: np.ndarray,
            history: dict[str, JaggedTensor] | None = None,
            negative_counts: np.ndarray | None = None) -> KeyedJaggedTensor:
        """The KJT of B rows (user u_b, item i_b, negative n_b): (B,) int64 indices each;
        `history` ({name: B-row JaggedTensor}) appends behaviour-history keys (sequence
        models only: every KJT a sharded model sees must have the same keys). With
        `negative_counts` (B,), row b has that many negatives: `negatives` holds all of
        them, row by row (sum(negative_counts),)."""
        keys, values, lengths = [], [], []
        for key, table, idx in ((USER, self.users, users), (ITEM, self.items, items)):
            keys.append(key)
            values.append(torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64)))
            lengths.append(torch.ones(len(idx), dtype=torch.int32))
            names = self.info.get("user_features" if key == USER else "item_features", [])
            _features(table, names, idx, keys, values, lengths)
        keys.append(NEG + ITEM)
        values.append(torch.from_numpy(np.ascontiguousarray(negatives, dtype=np.int64)))
        counts = np.ones(len(negatives), np.int32) if negative_counts is None else negative_counts
        lengths.append(torch.from_numpy(np.ascontiguousarray(counts, dtype=np.int32)))
        _features(self.items, self.info.get("item_features", []), negatives, keys, values, lengths, prefix=NEG,
                  group=None if negative_counts is None else counts)
        for name, jt in (history or {}).items():
            keys.append(name)
            values.append(jt.values().long())
            lengths.append(jt.lengths().int())
        return KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.cat(values), lengths=torch.cat(lengths))

    def batch(self, users: np.ndarray, items: np.ndarray, negatives: np.ndarray,
              history: dict[str, JaggedTensor] | None = None, negative_counts: np.ndarray | None = None) -> Batch:
        """A torchrec Batch (no dense features, label 1 for every row) around `kjt`."""
        n = len(users)
        return Batch(dense_features=torch.zeros(n, 0),
                     sparse_features=self.kjt(users, items, negatives, history, negative_counts),
                     labels=torch.ones(n))


def _features(table: pa.Table, names: list[str], idx: np.ndarray, keys: list, values: list, lengths: list,
              prefix: str = "", group: np.ndarray | None = None) -> None:
    """Append each side feature of rows `idx` of `table`: one id per row, or a list. With
    `group` (B,), consecutive runs of that many entries of `idx` form one KJT row (their
    values concatenated)."""
    take = pa.array(idx, pa.int64())
    for name in names:
        col = table.column(name).take(take).combine_chunks()
        keys.append(prefix + name)
        if pa.types.is_list(col.type):
            each = pa.compute.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            values.append(torch.from_numpy(col.flatten().to_numpy(zero_copy_only=False).astype(np.int64)))
        else:
            each = np.ones(len(idx), np.int64)
            values.append(torch.from_numpy(col.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)))
        if group is not None:  # per-row sums of the runs
            total, ends = np.concatenate([[0], np.cumsum(each)]), np.cumsum(group)
            each = total[ends] - total[ends - group]
        lengths.append(torch.from_numpy(each.astype(np.int32)))


def load_catalogue(path: str | Path, schema: DatasetSchema) -> Catalogue:
    info = schema.interactions
    root = Path(path)
    tables = {}
    for kind in ("users", "items"):
        file = root / info.get(f"{kind}_file", f"{kind}.parquet")
        if not file.is_file():
            raise UserError(f"interactions data set '{root}' has no {file.name} (convert it again with "
                            "`shardrec convert interactions`)")
        tables[kind] = pq.read_table(file)
        expected = int(info[f"num_{kind}"])
        if tables[kind].num_rows != expected:
            raise UserError(f"{file}: {tables[kind].num_rows:,} rows, schema.json says num_{kind} = {expected:,}")
    count = tables["items"].column("train_count").to_numpy().astype(np.int64)
    return Catalogue(info, tables["users"], tables["items"], count)


def split_pairs(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(users, items): the (N,) int64 index pairs of a split, in file order."""
    parts = [pq.read_table(f, columns=[USER, ITEM]) for f in split_files(path, split)]
    table = pa.concat_tables(parts)
    return (table.column(USER).to_numpy().astype(np.int64), table.column(ITEM).to_numpy().astype(np.int64))


class UserItems:
    """Each user's items of some splits, as CSR (indptr by user, sorted items)."""

    def __init__(self, users: np.ndarray, items: np.ndarray, num_users: int):
        order = np.lexsort((items, users))
        self.items = items[order]
        self.indptr = np.zeros(num_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=num_users), out=self.indptr[1:])
        self.num_users = num_users
        # Sorted keys user * I + item for vectorised membership tests (negative sampling).
        self.keys = users[order] * np.int64(2**31) + self.items

    @classmethod
    def union(cls, parts: list[UserItems]) -> UserItems:
        """Every interaction of `parts` (the same users)."""
        users = np.concatenate([p.keys >> 31 for p in parts])
        return cls(users, np.concatenate([p.items for p in parts]), parts[0].num_users)

    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    def mask(self, users: np.ndarray, num_items: int) -> torch.Tensor:
        """(len(users), I) bool: True where the user has the item."""
        starts, ends = self.indptr[users], self.indptr[users + 1]
        n = ends - starts
        rows = np.repeat(np.arange(len(users)), n)
        cols = self.items[np.repeat(starts - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(n.sum())]
        out = torch.zeros(len(users), num_items, dtype=torch.bool)
        out[torch.from_numpy(rows), torch.from_numpy(cols)] = True
        return out

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(B,) bool: whether each (user, item) pair is one of these interactions."""
        q = users.astype(np.int64) * np.int64(2**31) + items
        pos = np.searchsorted(self.keys, q)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == q if len(self.keys) else np.zeros(len(q), dtype=bool)
