"""`shardrec convert criteo|movielens`: raw click logs -> a shardrec data set.

    shardrec convert criteo --input day_0.gz day_1.gz --out data/criteo --table-size mlperf --test-files day_1
    shardrec convert movielens --input ml-100k --out data/ml100k
"""

from __future__ import annotations

import argparse
import os

from shardrec.configs.errors import UserError


def _summary(out: str, schema) -> str:
    rows = ", ".join(f"{k} {v:,} rows" for k, v in schema.splits.items())
    return f"wrote {out}: {rows}"


def cmd_convert_criteo(args: argparse.Namespace, extra: list[str]) -> int:
    from shardrec.data_pipeline.convert_common import ROW_GROUP_ROWS, parse_split
    from shardrec.data_pipeline.convert_criteo import convert_criteo

    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    by_file = bool(args.valid_files or args.test_files)
    if by_file and args.split is not None:
        raise UserError("--split and --valid-files/--test-files exclude each other: split by ratio or by file")
    for flag, value in (("--workers", args.workers), ("--row-group-rows", args.row_group_rows)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    schema = convert_criteo(
        args.input, args.out, table_size=args.table_size, min_count=args.min_count,
        split=parse_split(args.split or "0.8,0.1,0.1"), seed=args.seed,
        valid_files=args.valid_files or [], test_files=args.test_files or [], workers=args.workers,
        on_error=args.on_error, overwrite=args.overwrite, row_group_rows=args.row_group_rows or ROW_GROUP_ROWS)
    src = schema.source
    print(_summary(args.out, schema) + f"; {src['mode']} ids, table sizes "
          + ",".join(str(f.num_embeddings) for f in schema.sparse))
    if src["skipped_lines"]:
        detail = ", ".join(f"{k} {v:,}" for k, v in src["skipped"].items())
        print(f"skipped {src['skipped_lines']:,} malformed lines of {src['lines']:,} ({detail})")
    return 0


def cmd_convert_movielens(args: argparse.Namespace, extra: list[str]) -> int:
    from shardrec.data_pipeline.convert_common import parse_split
    from shardrec.data_pipeline.convert_movielens import convert_movielens

    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    schema = convert_movielens(args.input, args.out, seed=args.seed, split=parse_split(args.split),
                               overwrite=args.overwrite)
    print(_summary(args.out, schema) + f"; label rate {schema.source['label_rate']:.4f} (rating >= 4)")
    return 0


def add_convert_parser(subparsers) -> None:
    """Add `convert` with its `criteo` and `movielens` subcommands to the CLI's subparsers."""
    conv = subparsers.add_parser("convert", help="convert Criteo TSV or MovieLens files to a shardrec data set")
    kinds = conv.add_subparsers(dest="kind", required=True)

    c = kinds.add_parser("criteo", help="Criteo Kaggle / Terabyte TSV (plain or .gz) -> Parquet shards",
                         description="Dense I1..I13 become log(1 + max(x, 0)); C1..C26 become ids with 0 = "
                                     "empty, hashed into --table-size (1 + hash mod (size - 1)) or mapped "
                                     "through a vocabulary of the training split (--min-count).")
    c.add_argument("--input", nargs="+", required=True, metavar="FILE", help="TSV files (day_0 .. day_23, train.txt)")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--table-size", default=None,
                   help="rows per table: N, 26 comma-separated sizes, or 'mlperf' (MLPerf's 40M-capped "
                        "sizes); default 1000000. With --min-count: caps the hash space (hash mod N) first")
    c.add_argument("--min-count", type=int, default=None,
                   help="vocabulary mode: values seen fewer than K times in the training split share one "
                        "out-of-vocabulary id (needs a counting pass)")
    c.add_argument("--split", default=None, help="train,valid,test fractions (default 0.8,0.1,0.1), per line at random")
    c.add_argument("--seed", type=int, default=0, help="seed of the random split")
    c.add_argument("--valid-files", nargs="+", default=None, metavar="NAME",
                   help="split by file: these inputs (e.g. day_22) are the validation split")
    c.add_argument("--test-files", nargs="+", default=None, metavar="NAME",
                   help="split by file: these inputs (e.g. day_23) are the test split; other files are train")
    c.add_argument("--workers", type=int, default=None,
                   help=f"worker processes (default: all cores, {os.cpu_count()} here)")
    c.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                   help="malformed lines: stop naming the file and line (raise), or skip and count them")
    c.add_argument("--row-group-rows", type=int, default=None, help="rows per Parquet row group (default 131072)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    c.set_defaults(fn=cmd_convert_criteo)

    m = kinds.add_parser("movielens", help="MovieLens 100K / 1M folder -> CTR data set (label = rating >= 4)")
    m.add_argument("--input", required=True, metavar="DIR", help="folder with u.data/u.user/u.item or ratings.dat/users.dat/movies.dat")
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--split", default="0.8,0.1,0.1", help="train,valid,test fractions of a seeded random split")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    m.set_defaults(fn=cmd_convert_movielens)
