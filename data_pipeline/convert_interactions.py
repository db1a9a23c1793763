"""Implicit feedback (who interacted with what) -> a shardrec data set for retrieval models.

    convert_interactions(["u.data"], "data/ml100k_implicit", user="user", item="item", time="time",
                         columns=["user", "item", "rating", "time"], header=False)

Steps, all vectorised over rows (numpy / Arrow):
  1. read the interactions (interaction_inputs.py): rows of --input with the --user/--item
     (--time, --rating) columns, or lines `user item item ...` (--layout user-items, the
     position in the line is the time order). Without --time, the input order (file order,
     then line order) is each user's time order, and the row's position is its `time`.
  2. filter: rating >= --min-rating; duplicate (user, item) pairs keep the earliest (by time,
     then input order); then users and items with fewer than --min-user-interactions /
     --min-item-interactions rows are dropped, counted once on the deduplicated rows (one
     pass, not iterated: a kept user may end up with fewer rows after items are dropped).
  3. ids: users 0..U-1 and items 0..I-1 in order of first appearance in the filtered input.
  4. side features joined from --user-features / --item-features on the raw id (as text):
     categorical columns through a vocabulary of the whole table in sorted order (0 =
     missing or unknown, 1..V), list columns (COL:SEP) likewise per token, --item-flags
     NAME=C1,..,Ck a list of (index of each flag column that is 1) + 1. An id without a row
     in its table gets 0 in every feature (an empty list for list features).
  5. split per user: `random` (seeded order, RecBole's split_by_ratio counts) or
     `leave_last_out` (last -> test, second to last -> valid; users with fewer than 3
     interactions all train). --cold-items F holds a seeded fraction F of the items out of
     train and valid: all their rows go to test; --cold-users F does the same for users.
  6. --history N: every row of every split gets `hist_item_id`, the user's previous up to N
     items strictly before it in the user's whole timeline (all splits; by time, ties by
     input order: the order of step 5), oldest first; --history-features F,... adds
     `hist_<F>`, item feature F (one-hot) of each of those items. Sequence features of
     schema.json (sequence_of item_id / F, max_length N), listed in interactions["history"].
     --train-sequences also writes the split `train_sequences`: each user's last training
     row alone, whose history is the user's training sequence (its latest N items): what a
     next-item model trained on every position reads (retrieval.train_positions=all), one
     row per user instead of one per event; and `train_valid_sequences`, each user's last
     row of train and valid (the training sequence, then the valid item): a final fit on
     train and valid, for as many epochs as validation chose, scored on test.
  7. write DIR/{train,valid,test}/part-00000.parquet (rows sorted by user_id, time; row groups
     of 8192 rows), DIR/users.parquet, DIR/items.parquet and DIR/schema.json (last), through
     a staging folder renamed at the end (convert_common.staging).
"""

from __future__ import annotations

import math
import os
import shutil
import time as clock
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.convert_common import SPLITS, SplitWriter, check_output_folder, staging
from shardrec.data_pipeline.convert_table import split_names
from shardrec.data_pipeline.interaction_inputs import (
    Encoded,
    FeatureSpec,
    Rows,
    check_encoding,
    encode_features,
    feature_specs,
    parse_delimiter,
    read_rows,
    read_user_items,
)
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature, write_schema
from shardrec.data_pipeline.table_transforms import _time_values

CONVERTER = "shardrec convert interactions"
ROW_GROUP_ROWS = 8192  # small data sets: row groups small enough to balance over ranks
SPLIT_MODES = ("random", "leave_last_out")
LAYOUTS = ("rows", "user-items")
USERS_FILE, ITEMS_FILE = "users.parquet", "items.parquet"
RESERVED = ("label", "user_id", "item_id", "time", "raw_user", "raw_item", "train_count")
RESERVED_PREFIXES = ("neg_", "hist_")  # negatives (data_pipeline/interactions.py), histories (--history)
HIST = "hist_"


def parse_ratios(text: str | Sequence[float]) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' -> three non-negative fractions (train > 0) that sum to 1."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise UserError(f"--ratios '{text}': expected three numbers train,valid,test like 0.8,0.1,0.1") from None
    if len(values) != 3 or any(v < 0 or not math.isfinite(v) for v in values) or values[0] <= 0:
        raise UserError(f"--ratios '{text}': expected three non-negative fractions train,valid,test with "
                        "train > 0, like 0.8,0.1,0.1")
    if abs(sum(values) - 1) > 1e-6:
        raise UserError(f"--ratios '{text}': the fractions sum to {sum(values):g}, expected 1")
    return values  # type: ignore[return-value]


def ratio_counts(n: np.ndarray, ratios: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user with n interactions: (train, valid, test) counts as RecBole's split_by_ratio
    computes them: valid = floor(r_valid * n), test = floor(r_test * n); then test, then
    valid, gets one from train when its share is in (0, 1) and train has more than 1."""
    counts = [(r * n).astype(np.int64) for r in ratios]  # int() of the product, as RecBole
    counts[0] = n - counts[1] - counts[2]
    for k in (2, 1):
        share = ratios[k] * n
        move = (counts[0] > 1) & (share > 0) & (share < 1)
        counts[k] = counts[k] + move
        counts[0] = counts[0] - move
    return counts[0], counts[1], counts[2]


def _first_appearance(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense ids numbered by first appearance: (id per row, code of each id)."""
    uniq, first = np.unique(codes, return_index=True)
    order = uniq[np.argsort(first, kind="stable")]
    lut = np.full(size, -1, np.int64)
    lut[order] = np.arange(len(order))
    return lut[codes], order


def history_index(group: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by (group, time): each row's previous up to `n` rows of its group, oldest
    first, as (offsets (R + 1,) int64, row indices (offsets[-1],) int64): row r at position p
    in its group gets rows r - min(p, n) .. r - 1. Vectorised: one cumsum, one repeat."""
    rows = len(group)
    first = np.ones(rows, bool)
    first[1:] = group[1:] != group[:-1]
    pos = np.arange(rows) - np.maximum.accumulate(np.where(first, np.arange(rows), 0))
    length = np.minimum(pos, n)
    offsets = np.zeros(rows + 1, np.int64)
    np.cumsum(length, out=offsets[1:])
    # value j of row r is row (r - length[r]) + (j - offsets[r])
    idx = np.arange(offsets[-1]) + np.repeat(np.arange(rows) - length - offsets[:-1], length)
    return offsets, idx


def history_column(offsets: np.ndarray, values: np.ndarray) -> pa.ListArray:
    """A list<int64> column from history_index's offsets and the values at its indices."""
    if offsets[-1] > np.iinfo(np.int32).max:
        raise UserError(f"--history: {int(offsets[-1]):,} history ids in all, more than a Parquet list column "
                        "holds (2^31 - 1); lower --history")
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, pa.int64()))


SEQUENCE_SPLIT = "train_sequences"
# Each user's last row of train and valid: the training sequence grown by the valid item, for
# a final fit after the epochs were chosen on valid (then scored on test only).
REFIT_SPLIT = "train_valid_sequences"
# Which splits' events a sequence split holds (a negative must not be one of them).
SEQUENCE_SOURCES = {SEQUENCE_SPLIT: ("train",), REFIT_SPLIT: ("train", "valid")}


def _held_out(n: int, fraction: float, seed: list[int]) -> tuple[np.ndarray, int]:
    """(n,) bool mask of a seeded round(fraction x n) of the ids (--cold-items / --cold-users),
    and how many that is."""
    count = int(round(float(fraction) * n))
    mask = np.zeros(n, bool)
    mask[np.random.default_rng(seed).permutation(n)[:count]] = True
    return mask, count


def _history_options(history, history_features, item_specs: list[FeatureSpec]) -> tuple[int, list[str]]:
    """--history N (int >= 0) and --history-features: one-hot item features, N > 0."""
    if isinstance(history, bool) or int(history) != history or history < 0:
        raise UserError(f"--history must be a non-negative integer (the most previous items per row), got {history!r}")
    names = split_names(history_features)
    if names and not history:
        raise UserError("--history-features needs --history N (the number of previous items per row)")
    kinds = {s.name: s.kind for s in item_specs}
    for n in names:
        if n not in kinds:
            raise UserError(f"--history-features '{n}': not an item feature (item features: "
                            f"{', '.join(kinds) or 'none'})")
        if kinds[n] != "sparse":
            raise UserError(f"--history-features '{n}': a multi-hot item feature; a history holds one id per "
                            "item, so only one-hot item features (--item-sparse) can be in it")
        if names.count(n) > 1:
            raise UserError(f"--history-features '{n}' is named twice")
    return int(history), names


def _codes(values: pa.Array) -> tuple[np.ndarray, pa.Array]:
    enc = pc.dictionary_encode(values)
    return np.asarray(enc.indices.to_numpy(zero_copy_only=False), np.int64), enc.dictionary


def _split(uid: np.ndarray, num_users: int, mode: str, ratios, seed: int) -> np.ndarray:
    """0/1/2 (train/valid/test) per row; rows are sorted by (user, time)."""
    n = np.bincount(uid, minlength=num_users)
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    pos = np.arange(len(uid)) - start[uid]  # chronological position within the user
    if mode == "leave_last_out":
        last = n[uid] - 1
        out = np.where(pos == last, 2, np.where(pos == last - 1, 1, 0))
        return np.where(n[uid] < 3, 0, out).astype(np.int8)
    keys = np.random.default_rng(seed).random(len(uid))
    order = np.lexsort((keys, uid))  # by user, then the seeded random key
    rank = np.empty(len(uid), np.int64)
    rank[order] = np.arange(len(uid)) - start[uid[order]]
    train, valid, _ = ratio_counts(n, ratios)
    return np.where(rank < train[uid], 0, np.where(rank < (train + valid)[uid], 1, 2)).astype(np.int8)


def _side(side: str, path, key, specs: list[FeatureSpec], columns, opts: dict, scratch: Path):
    """Read and encode a feature table: (its keys as text, encoded features, source info)."""
    if path is None:
        if specs or key:
            raise UserError(f"--{side}-sparse/--{side}-multi-hot/--{side}-key need --{side}-features FILE")
        return None, [], {}
    if not key:
        raise UserError(f"--{side}-features needs --{side}-key naming its {side} id column")
    wanted = {key: f"--{side}-key"}
    for s in specs:
        wanted.update({c: f"--{side}-{s.kind.replace('_', '-')} {s.name}" for c in s.columns})
    rows = read_rows([path], wanted, columns=split_names(columns) or None, header=None, scratch=scratch,
                     columns_flag=f"--{side}-features-columns", **opts)
    keys = rows.strings(key, f"{side} key")
    info = {"file": str(Path(path).resolve()), "key": key, "rows": rows.num_rows,
            "duplicate_keys": rows.num_rows - len(pc.unique(keys))}
    return keys, encode_features(rows, specs), info


def _join(keys, ids: pa.Array) -> np.ndarray:
    """Row of each id in its feature table, -1 when it has none (the first row of a repeated key)."""
    if keys is None:
        return np.full(len(ids), -1, np.int64)
    return np.asarray(pc.fill_null(pc.index_in(ids, value_set=keys), -1).to_numpy(zero_copy_only=False), np.int64)


def _column(values) -> pa.Array:
    return values if isinstance(values, pa.Array) else pa.array(values, pa.int64())


def _take(values, idx: np.ndarray):
    return values.take(pa.array(idx)) if isinstance(values, pa.Array) else values[idx]


def convert_interactions(inputs: Sequence[str | os.PathLike] | str, out: str | os.PathLike, user: str, item: str, *,
                         time: str | None = None, rating: str | None = None, min_rating: float | None = None,
                         user_features=None, user_key=None, user_sparse=(), user_multi_hot=(),
                         item_features=None, item_key=None, item_sparse=(), item_multi_hot=(), item_flags=(),
                         category: str | None = None, split: str = "random", ratios=None, seed: int = 0,
                         cold_items: float = 0.0, cold_users: float = 0.0, min_user_interactions: int = 0,
                         min_item_interactions: int = 0,
                         layout: str = "rows", delimiter: str | None = None, header: bool | None = None,
                         columns=None, user_features_columns=None, item_features_columns=None,
                         encoding: str | None = None, history: int = 0, history_features=(),
                         train_sequences: bool = False, overwrite: bool = False) -> DatasetSchema:
    """Convert interaction files into the data set folder `out` (see the module docstring)."""
    started = clock.perf_counter()
    paths = [Path(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    options = {k: str(v) if isinstance(v, os.PathLike) else list(v) if isinstance(v, tuple) else v
               for k, v in locals().items() if k not in ("inputs", "out", "paths", "started")}
    if not paths:
        raise UserError("no input files given (--input)")
    if not user or not item:
        raise UserError("--user and --item name the columns of the user and item ids")
    if split not in SPLIT_MODES:
        raise UserError(f"--split '{split}': expected one of {', '.join(SPLIT_MODES)}")
    if layout not in LAYOUTS:
        raise UserError(f"--layout '{layout}': expected one of {', '.join(LAYOUTS)}")
    if split == "leave_last_out" and ratios is not None:
        raise UserError("--ratios is for --split random; leave_last_out puts each user's last interaction in "
                        "test and the one before it in valid")
    fractions = parse_ratios(ratios if ratios is not None else "0.8,0.1,0.1")
    if (rating is None) != (min_rating is None):
        raise UserError("--rating COL and --min-rating R go together: keep rows whose rating is >= R")
    for flag, v, what in (("--cold-items", cold_items, "items"), ("--cold-users", cold_users, "users")):
        if not 0 <= float(v) < 1:
            raise UserError(f"{flag} {v}: expected a fraction of the {what} in [0, 1)")
    for flag, v in (("--min-user-interactions", min_user_interactions),
                    ("--min-item-interactions", min_item_interactions)):
        if int(v) != v or v < 0:
            raise UserError(f"{flag} must be a non-negative integer, got {v!r}")
    if layout == "user-items" and (time or rating or columns or header is not None):
        raise UserError("--layout user-items reads lines 'user item item ...' (the position is the time order): "
                        "--time, --rating, --columns and --header do not apply")
    opts = {"delimiter": parse_delimiter(delimiter), "encoding": check_encoding(encoding)}
    user_specs = feature_specs("user", user_sparse, user_multi_hot)
    item_specs = feature_specs("item", item_sparse, item_multi_hot, item_flags)
    names = [s.name for s in user_specs + item_specs]
    for n in names:
        if n in RESERVED or n.startswith(RESERVED_PREFIXES):
            raise UserError(f"feature name '{n}' is reserved (user_id, item_id, label, time, raw_user, raw_item, "
                            "train_count, neg_* and hist_*); rename the column with --user/item-features-columns")
        if names.count(n) > 1:
            raise UserError(f"feature '{n}' is named twice; each user and item feature needs its own name")
    item_names = [s.name for s in item_specs]
    if category is not None and category not in item_names:
        raise UserError(f"--category '{category}': not an item feature (item features: "
                        f"{', '.join(item_names) or 'none'})")
    category = category or (item_names[0] if item_names else None)
    history, history_features = _history_options(history, history_features, item_specs)
    if train_sequences and not history:
        raise UserError("--train-sequences writes each user's training sequence as a history: it needs --history N")
    check_output_folder(Path(out), overwrite)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with staging(out, overwrite) as tmp:
        scratch = tmp / ".work"
        # 1. read
        times = raw_rating = None
        lines_without_items = 0
        if layout == "user-items":
            users, items, lines_without_items = read_user_items(paths, opts["encoding"])
        else:
            wanted = {user: "--user", item: "--item", **({time: "--time"} if time else {}),
                      **({rating: "--rating"} if rating else {})}
            rows: Rows = read_rows(paths, wanted, header=header, columns=split_names(columns) or None,
                                   scratch=scratch, columns_flag="--columns", **opts)
            users, items = rows.strings(user, "user id"), rows.strings(item, "item id")
            if time:
                times = rows.numbers(time, "time", parse=_time_values)
            if rating:
                raw_rating = rows.numbers(rating, "rating")
        n_read = len(users)
        if not n_read:
            raise UserError(f"no interactions in {', '.join(map(str, paths))}")
        order = np.arange(n_read)
        t = times if times is not None else order.astype(np.float64)
        ucode, ucat = _codes(users)
        icode, icat = _codes(items)
        # 2. filter
        keep = np.ones(n_read, bool) if raw_rating is None else raw_rating >= float(min_rating)
        below = int(n_read - keep.sum())
        k = np.flatnonzero(keep)
        k = k[np.lexsort((k, t[k], icode[k], ucode[k]))]  # by pair, earliest first
        later = np.zeros(len(k), bool)
        later[1:] = (ucode[k][1:] == ucode[k][:-1]) & (icode[k][1:] == icode[k][:-1])
        keep[k[later]] = False
        u_count = np.bincount(ucode[keep], minlength=len(ucat))
        i_count = np.bincount(icode[keep], minlength=len(icat))
        rare_u, rare_i = u_count < min_user_interactions, i_count < min_item_interactions
        rare = keep & (rare_u[ucode] | rare_i[icode])
        keep &= ~rare
        rows_kept = np.flatnonzero(keep)
        if not len(rows_kept):
            raise UserError(f"no interactions left in {', '.join(map(str, paths))} after filtering ("
                            f"{n_read:,} read, {below:,} with rating < {min_rating}, {int(later.sum()):,} "
                            f"duplicates, {int(rare.sum()):,} of rare users or items)")
        # 3. ids in order of first appearance
        uid, u_codes = _first_appearance(ucode[rows_kept], len(ucat))
        iid, i_codes = _first_appearance(icode[rows_kept], len(icat))
        raw_users, raw_items = ucat.take(pa.array(u_codes)), icat.take(pa.array(i_codes))
        num_users, num_items = len(u_codes), len(i_codes)
        # 4. side features, per catalogue entry
        u_keys, u_enc, u_info = _side("user", user_features, user_key, user_specs, user_features_columns, opts,
                                      scratch)
        i_keys, i_enc, i_info = _side("item", item_features, item_key, item_specs, item_features_columns, opts,
                                      scratch)
        u_rows, i_rows = _join(u_keys, raw_users), _join(i_keys, raw_items)
        if u_info:
            u_info["users_without_row"] = int((u_rows < 0).sum())
        if i_info:
            i_info["items_without_row"] = int((i_rows < 0).sum())
        user_cols = {e.spec.name: e.take(u_rows) for e in u_enc}
        item_cols = {e.spec.name: e.take(i_rows) for e in i_enc}
        # 5. split, rows sorted by (user, time, input order)
        s = np.lexsort((rows_kept, t[rows_kept], uid))
        uid, iid, rows_sorted = uid[s], iid[s], rows_kept[s]
        cold, n_cold = _held_out(num_items, cold_items, [seed, 1])
        cold_u, n_cold_u = _held_out(num_users, cold_users, [seed, 2])
        warm = np.flatnonzero(~cold[iid] & ~cold_u[uid])
        which = np.full(len(uid), 2, np.int8)
        which[warm] = _split(uid[warm], num_users, split, fractions, seed)
        train_count = np.bincount(iid[which == 0], minlength=num_items)
        if not train_count.sum():
            raise UserError("no interactions left for the train split (too many --cold-items / --cold-users?)")
        # 6. histories over each user's whole timeline (rows are in (user, time, input order))
        hist_cols, hist_feats = {}, []
        if history:
            offsets, idx = history_index(uid, history)
            hist_items = iid[idx]
            hist_cols[HIST + "item_id"] = history_column(offsets, hist_items)
            hist_feats.append(SparseFeature(HIST + "item_id", num_items, True, "item_id", history))
            sizes = {e.spec.name: e.num_embeddings for e in i_enc}
            for name in history_features:
                hist_cols[HIST + name] = history_column(offsets, item_cols[name][hist_items])
                hist_feats.append(SparseFeature(HIST + name, sizes[name], True, name, history))
        # 7. write
        out_time = np.floor(t[rows_sorted]).astype(np.int64)
        table = {"label": pa.array(np.ones(len(uid), np.float32)), "user_id": pa.array(uid),
                 "item_id": pa.array(iid),
                 **{n: _column(_take(v, uid)) for n, v in user_cols.items()},
                 **{n: _column(_take(v, iid)) for n, v in item_cols.items()},
                 **hist_cols, "time": pa.array(out_time)}
        encoded: list[Encoded] = u_enc + i_enc
        schema = DatasetSchema(label="label", dense=[], sparse=[
            SparseFeature("user_id", num_users), SparseFeature("item_id", num_items),
            *[SparseFeature(e.spec.name, e.num_embeddings, e.multi_hot) for e in encoded], *hist_feats])
        arrow = schema.arrow_schema().append(pa.field("time", pa.int64()))
        whole = pa.table(table, schema=arrow)
        writer = SplitWriter(tmp, "part-00000.parquet", arrow, ROW_GROUP_ROWS)
        for code, name in enumerate(SPLITS):
            writer.write(name, whole.take(pa.array(np.flatnonzero(which == code))))
        if train_sequences:  # rows are in (user, time) order: a user's last row of its splits ends its run
            for name, sources in SEQUENCE_SOURCES.items():
                tr = np.flatnonzero(np.isin(which, [SPLITS.index(s) for s in sources]))
                writer.write(name, whole.take(pa.array(tr[np.append(uid[tr][1:] != uid[tr][:-1], True)])))
        writer.close()
        schema.splits = {name: writer.rows[name] for name in (*SPLITS, *SEQUENCE_SOURCES) if writer.rows.get(name)}
        pq.write_table(pa.table({"user_id": pa.array(np.arange(num_users)), "raw_user": pc.cast(raw_users, pa.string()),
                                 **{n: _column(v) for n, v in user_cols.items()}}), tmp / USERS_FILE)
        pq.write_table(pa.table({"item_id": pa.array(np.arange(num_items)), "raw_item": pc.cast(raw_items, pa.string()),
                                 **{n: _column(v) for n, v in item_cols.items()},
                                 "train_count": pa.array(train_count.astype(np.int64))}), tmp / ITEMS_FILE)
        schema.interactions = {
            "user": "user_id", "item": "item_id", "user_features": [e.spec.name for e in u_enc],
            "item_features": [e.spec.name for e in i_enc], "num_users": num_users, "num_items": num_items,
            "category": category, "time": "time" if time else None, "split": split, "cold_items": n_cold,
            "cold_users": n_cold_u,
            "users_file": USERS_FILE, "items_file": ITEMS_FILE, "history": [f.name for f in hist_feats],
            "history_length": history}
        options["ratios"] = list(fractions) if split == "random" else None
        schema.source = {
            "converter": CONVERTER, "inputs": [str(p.resolve()) for p in paths], "options": options,
            "rows_read": n_read, "below_min_rating": below, "dropped_duplicates": int(later.sum()),
            "filtered_rows": int(rare.sum()), "filtered_users": int((rare_u & (u_count > 0)).sum()),
            "filtered_items": int((rare_i & (i_count > 0)).sum()), "rows": int(len(uid)),
            "lines_without_items": lines_without_items, "user_features": u_info, "item_features": i_info,
            "wall_s": round(clock.perf_counter() - started, 3)}
        shutil.rmtree(scratch, ignore_errors=True)
        write_schema(tmp, schema)
    return schema
