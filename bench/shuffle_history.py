"""A copy of a history data set whose sequence columns are permuted across rows: the
control of issue 15's "the gain disappears when the history is shuffled across users".

    .venv/bin/python bench/shuffle_history.py --data /tmp/ml_liked --out /tmp/ml_liked_shuffled
    .venv/bin/python bench/tune_movielens.py --data /tmp/ml_liked_shuffled --models dien

Every other column and every split's rows stay as they were; within each split, all sequence
features (schema: sequence_of) move together under one seeded permutation, so each row keeps
a real user's history, only not its own.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a data set with a sequence feature (`--history N`)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    schema = json.loads((Path(args.data) / "schema.json").read_text())
    sequences = [f["name"] for f in schema["sparse"] if f.get("sequence_of")]
    if not sequences:
        raise SystemExit(f"{args.data}: no sequence feature (schema.json: sequence_of) to shuffle")
    rng = np.random.default_rng(args.seed)
    tmp = Path(args.out + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for split in schema["splits"]:
        table = ds.dataset(Path(args.data) / split).to_table()
        perm = rng.permutation(table.num_rows)
        for name in sequences:
            table = table.set_column(table.schema.get_field_index(name), name, table[name].take(perm))
        (tmp / split).mkdir(parents=True)
        pq.write_table(table, tmp / split / "part-00000.parquet", row_group_size=8192)
    shutil.copy(Path(args.data) / "schema.json", tmp / "schema.json")
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    print(f"wrote {args.out}: {', '.join(sequences)} permuted across the rows of each split")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
