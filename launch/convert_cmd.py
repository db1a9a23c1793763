"""`shardrec convert criteo|movielens|table|interactions`: raw logs -> a shardrec data set.

    shardrec convert criteo --input day_0.gz day_1.gz --out data/criteo --table-size mlperf --test-files day_1
    shardrec convert movielens --input ml-100k --out data/ml100k
    shardrec convert table --input clicks.csv --out data/clicks --label clicked --sparse user,item --dense price
    shardrec convert interactions --input Beauty.txt --layout user-items --user user --item item --out data/beauty
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
                               overwrite=args.overwrite, history=args.history, history_of=args.history_of)
    print(_summary(args.out, schema) + f"; label rate {schema.source['label_rate']:.4f} (rating >= 4)"
          + (f"; hist_item_id of up to {args.history} {'liked ' if args.history_of == 'liked' else ''}movies"
             if args.history else ""))
    return 0


# `convert table` options; a flag left out (None) lets the --spec file's value stand.
TABLE_OPTIONS = ("input", "out", "label", "label_threshold", "label_positive", "sparse", "dense", "multi_hot", "keep", "format",
                 "delimiter", "header", "columns", "newlines_in_values", "split", "seed", "time_column", "train_files", "valid_files",
                 "test_files", "min_count", "max_vocab", "hash_buckets", "dense_fill", "dense_transform", "workers",
                 "on_error", "overwrite", "row_group_rows")


def table_options(args: argparse.Namespace) -> dict:
    """The options of `convert table`: the --spec file's, each overridden by its flag."""
    from shardrec.data_pipeline.convert_table import load_spec, parse_multi_hot, split_names

    opts = dict(load_spec(args.spec)) if args.spec else {}
    for key in TABLE_OPTIONS:
        value = getattr(args, key)
        if value is None:
            continue
        if key in ("sparse", "dense", "keep", "columns", "label_positive"):
            value = split_names(value)
        elif key == "multi_hot":
            value = parse_multi_hot(value)
        elif key in ("hash_buckets", "dense_fill", "dense_transform"):
            value = ",".join(value)  # repeated flags: one 'V,COL:V,...' list
        opts[key] = value
    for key, flag in (("input", "--input"), ("out", "--out"), ("label", "--label")):
        if not opts.get(key):
            raise UserError(f"{flag} is required (as a flag or as '{key}' in the --spec file)")
    if isinstance(opts.get("delimiter"), str) and opts["delimiter"].lower() in ("\\t", "tab"):
        opts["delimiter"] = "\t"
    if isinstance(opts.get("split"), (list, tuple)):
        opts["split"] = ",".join(str(v) for v in opts["split"])
    for key in ("train_files", "valid_files", "test_files"):
        if isinstance(opts.get(key), str):
            opts[key] = split_names(opts[key])
    return opts


def cmd_convert_table(args: argparse.Namespace, extra: list[str]) -> int:
    from shardrec.data_pipeline.convert_table import convert_table

    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    opts = table_options(args)
    inputs, out = opts.pop("input"), str(opts.pop("out"))
    schema = convert_table([inputs] if isinstance(inputs, str) else list(inputs), out, opts.pop("label"), **opts)
    src = schema.source
    sizes = ", ".join(f"{f.name} {f.num_embeddings:,}" for f in schema.sparse)
    print(_summary(out, schema) + f"; table sizes: {sizes}")
    if src["skipped_rows"]:
        detail = ", ".join(f"{k} {v:,}" for k, v in src["skipped"].items())
        print(f"skipped {src['skipped_rows']:,} malformed rows of {src['rows_read']:,} ({detail})")
    return 0


TABLE_DESCRIPTION = """\
Turn your own table of rows (a click log, ratings, ...) into a shardrec data set: Parquet
shards per split, schema.json, and transforms.json + vocab/ recording how raw values were
encoded, so that rows seen later (predictions) are encoded the same way
(data_pipeline.table_transforms.TableTransforms).

Column roles (each flag may be repeated: --sparse a --sparse b,c):
  label        0/1 or true/false; with --label-threshold X: 1 where value >= X;
               with --label-positive V: 1 where value == V
  --dense      numbers -> float32; missing -> --dense-fill; --dense-transform
  --sparse     categories of any type -> int64 ids: vocabulary of the train split
               (0 = missing or out of vocabulary, 1.. by descending count) or --hash-buckets
  --multi-hot  COL:SEP, a string of tokens (genres:|) -> list<int64> ids; empty -> []
  --keep       written unchanged, not a feature (row ids or user ids, to join predictions)

Every option can also come from a YAML --spec with the same names (label_threshold,
multi_hot, ...; per column: sparse: [{name: user, hash_buckets: 1000000}, item],
dense: [{name: price, transform: log1p, fill: 0}]); flags override the spec."""

TABLE_EPILOG = """\
examples:
  shardrec convert table --input clicks.csv --out data/clicks --label clicked \\
      --sparse user,item --dense price --multi-hot tags:'|' --keep row_id
  shardrec convert table --input ratings.parquet --out data/ratings --label rating \\
      --label-threshold 4 --sparse user,movie --dense age --time-column ts
  shardrec convert table --spec clicks.yaml --overwrite"""


def add_table_parser(kinds) -> None:
    t = kinds.add_parser("table", help="any table (CSV/TSV, Parquet, JSON lines; plain or .gz) -> a shardrec data set",
                         description=TABLE_DESCRIPTION, epilog=TABLE_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--input", nargs="+", action="extend", default=None, metavar="FILE",
                   help="input files: .csv/.tsv/.parquet/.jsonl/.json (optionally .gz); several files are one table")
    t.add_argument("--out", default=None, metavar="DIR", help="output folder (refused if it exists, unless --overwrite)")
    t.add_argument("--spec", default=None, metavar="FILE.yaml",
                   help="YAML file with any of these options (keys: input, out, label, label_threshold, sparse, "
                        "dense, multi_hot, keep, ...); flags given here override it")
    g = t.add_argument_group("columns")
    g.add_argument("--label", default=None, metavar="COL",
                   help="the target column: 0/1 or true/false (anything else is an error naming file, line and "
                        "value), or numbers with --label-threshold; written as float32")
    g.add_argument("--label-threshold", type=float, default=None, metavar="X",
                   help="label = 1.0 where the label column's value >= X, else 0.0 (e.g. rating >= 4)")
    g.add_argument("--label-positive", action="append", default=None, metavar="V,...",
                   help="label = 1.0 where the label column's value (as text, spaces trimmed) is one of these, "
                        "else 0.0 (e.g. --label-positive '>50K'); a missing value is malformed")
    g.add_argument("--sparse", action="append", default=None, metavar="COL,...",
                   help="categorical columns of any type (strings, ints, bools) -> one int64 id per row")
    g.add_argument("--dense", action="append", default=None, metavar="COL,...",
                   help="numeric columns -> float32 (text is parsed; empty, NA, NaN, NULL count as missing)")
    g.add_argument("--multi-hot", action="append", default=None, metavar="COL:SEP,...",
                   help="columns of SEP-separated tokens (e.g. genres:|; a bare COL means SEP '|'; list columns "
                        "of Parquet/JSON need no SEP) -> list<int64>, each token through the column's vocabulary "
                        "or hash; empty tokens are dropped, a missing value is an empty list")
    g.add_argument("--keep", action="append", default=None, metavar="COL,...",
                   help="pass-through columns (row id, user id) written unchanged into the Parquet files but not "
                        "features in schema.json: to join predictions back to your rows")
    g = t.add_argument_group("reading")
    g.add_argument("--format", choices=["csv", "tsv", "parquet", "jsonl"], default=None,
                   help="input format for every file (default: from each extension, a .gz suffix skipped)")
    g.add_argument("--delimiter", default=None, metavar="CHAR",
                   help="field separator of CSV/TSV files (default ',' for .csv, tab for .tsv; 'tab' or '\\t' for tab)")
    g.add_argument("--newlines-in-values", action="store_true", default=None,
                   help="quoted CSV/TSV fields may hold line breaks (review texts); each such file is then read "
                        "by one worker, in order")
    g.add_argument("--no-header", dest="header", action="store_false", default=None,
                   help="CSV/TSV files have no header line: name the fields with --columns")
    g.add_argument("--columns", default=None, metavar="A,B,...", help="field names of headerless CSV/TSV files")
    g = t.add_argument_group("splits (one way: by ratio, by time or by file)")
    g.add_argument("--split", default=None, metavar="TRAIN,VALID,TEST",
                   help="fractions (default 0.8,0.1,0.1). Without --time-column each row's split is a hash of "
                        "(--seed, file, row position): deterministic, the same for any --workers")
    g.add_argument("--seed", type=int, default=None, metavar="S", help="seed of the ratio split (default 0)")
    g.add_argument("--time-column", default=None, metavar="COL",
                   help="split by time: the latest TEST fraction of rows by COL (numbers or ISO 8601 dates/times) is "
                        "test, the VALID fraction before it valid (rows at the cut time go to the later split); "
                        "costs one more read of the column, its values kept in 8-byte-a-row scratch files")
    g.add_argument("--train-files", nargs="+", action="extend", default=None, metavar="NAME",
                   help="split by file: these inputs are train (then every input must be named by one of the three)")
    g.add_argument("--valid-files", nargs="+", action="extend", default=None, metavar="NAME",
                   help="split by file: these inputs (file name, name without extension, or path) are valid")
    g.add_argument("--test-files", nargs="+", action="extend", default=None, metavar="NAME",
                   help="split by file: these inputs are test; unnamed inputs are train unless --train-files is given")
    g = t.add_argument_group("categorical ids")
    g.add_argument("--min-count", type=int, default=None, metavar="K",
                   help="vocabulary: keep values seen at least K times in the train split (default 1); rarer ones "
                        "and unseen ones get id 0, like missing values")
    g.add_argument("--max-vocab", type=int, default=None, metavar="N",
                   help="vocabulary: keep at most the N most frequent values per column (default unlimited; ties by "
                        "ascending value)")
    g.add_argument("--hash-buckets", action="append", default=None, metavar="N|COL:N",
                   help="hash values into N ids instead of a vocabulary (id 0 = missing, 1 + hash mod (N - 1)); "
                        "N for every sparse column, COL:N for one (repeatable). Stable across runs and machines")
    g = t.add_argument_group("dense values")
    g.add_argument("--dense-fill", action="append", default=None, metavar="X|COL:X",
                   help="value written for missing dense values, in output units (default 0; after standardize 0 is "
                        "the train mean); X for all, COL:X for one")
    g.add_argument("--dense-transform", action="append", default=None, metavar="T|COL:T",
                   help="none (default), log1p = log(1 + x) with negative values clamped to 0 first, or standardize "
                        "= (x - mean) / std with the train split's mean and std; T for all, COL:T for one")
    g = t.add_argument_group("running")
    g.add_argument("--workers", type=int, default=None,
                   metavar="N", help=f"worker processes (default: all cores, {os.cpu_count()} here); the output does not depend on it")
    g.add_argument("--on-error", choices=["raise", "skip"], default=None,
                   help="a malformed row (wrong field count, bad label, unparsable number or time, bad JSON): stop "
                        "naming file:line, column and value (raise, default), or skip it and count it (skip; the "
                        "count is printed and saved in schema.json)")
    g.add_argument("--row-group-rows", type=int, default=None, metavar="N", help="rows per Parquet row group (default 131072)")
    g.add_argument("--overwrite", action="store_true", default=None,
                   help="replace an existing output folder (only an empty folder or a shardrec data set)")
    t.set_defaults(fn=cmd_convert_table, uses_torch=False)


def _bool(flag: str, text: str | None) -> bool | None:
    if text is None:
        return None
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.lower())
    if value is None:
        raise UserError(f"{flag} '{text}': expected true or false")
    return value


def cmd_convert_interactions(args: argparse.Namespace, extra: list[str]) -> int:
    from shardrec.data_pipeline.convert_interactions import convert_interactions

    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    schema = convert_interactions(
        args.input, args.out, args.user, args.item, time=args.time, rating=args.rating, min_rating=args.min_rating,
        user_features=args.user_features, user_key=args.user_key, user_sparse=args.user_sparse or (),
        user_multi_hot=args.user_multi_hot or (), item_features=args.item_features, item_key=args.item_key,
        item_sparse=args.item_sparse or (), item_multi_hot=args.item_multi_hot or (),
        item_flags=args.item_flags or (), category=args.category, split=args.split, ratios=args.ratios,
        seed=args.seed, cold_items=args.cold_items, cold_users=args.cold_users,
        min_user_interactions=args.min_user_interactions, min_item_interactions=args.min_item_interactions, layout=args.layout, delimiter=args.delimiter,
        header=_bool("--header", args.header), columns=args.columns,
        user_features_columns=args.user_features_columns, item_features_columns=args.item_features_columns,
        encoding=args.encoding, history=args.history, history_features=args.history_features or (),
        train_sequences=args.train_sequences, overwrite=args.overwrite)
    inter, src = schema.interactions, schema.source
    print(_summary(args.out, schema) + f"; {inter['num_users']:,} users, {inter['num_items']:,} items"
          + (f", {inter['cold_items']:,} cold items (test only)" if inter["cold_items"] else "")
          + (f", {inter['cold_users']:,} cold users (test only)" if inter["cold_users"] else "")
          + (f"; histories of up to {inter['history_length']}: {', '.join(inter['history'])}"
             if inter["history"] else ""))
    dropped = [f"{n:,} {what}" for n, what in ((src["below_min_rating"], "below --min-rating"),
                                                 (src["dropped_duplicates"], "duplicate (user, item) pairs"),
                                                 (src["filtered_rows"], "of rare users or items")) if n]
    if dropped:
        print(f"dropped {', '.join(dropped)} of {src['rows_read']:,} rows read")
    return 0


INTERACTIONS_DESCRIPTION = """\
Implicit feedback (who interacted with what: views, purchases, ratings) -> a data set for
retrieval models: every row a positive (label 1.0) with user_id and item_id (dense ids in
order of first appearance), the joined user and item side features and `time`, split per
user; plus users.parquet and items.parquet (the catalogue, with train_count per item).

Rows are filtered in this order: --min-rating, then duplicate (user, item) pairs (the
earliest is kept), then --min-user-interactions / --min-item-interactions."""

INTERACTIONS_EPILOG = """\
examples:
  shardrec convert interactions --input ratings.csv --user user --item movie --time ts \\
      --rating rating --min-rating 4 --split leave_last_out --out data/ratings
  shardrec convert interactions --input Video.txt --columns user,item --header false \\
      --delimiter ' ' --user user --item item --split leave_last_out --out data/video_games
  shardrec convert interactions --input Beauty.txt --layout user-items --user user --item item \\
      --split leave_last_out --out data/beauty"""


def add_interactions_parser(kinds) -> None:
    i = kinds.add_parser("interactions", help="implicit feedback (user, item[, time]) -> a data set for retrieval "
                                              "models, split per user",
                         description=INTERACTIONS_DESCRIPTION, epilog=INTERACTIONS_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    i.add_argument("--input", nargs="+", action="extend", required=True, metavar="FILE",
                   help="interaction files: .csv/.tsv/.parquet/.jsonl, or any other delimited text (.txt, .data); "
                        "optionally .gz; several files are one log, in order")
    i.add_argument("--out", required=True, metavar="DIR", help="output folder (refused if it exists, unless --overwrite)")
    g = i.add_argument_group("columns")
    g.add_argument("--user", required=True, metavar="COL", help="the user id column (any type: read as text)")
    g.add_argument("--item", required=True, metavar="COL", help="the item id column (any type: read as text)")
    g.add_argument("--time", default=None, metavar="COL",
                   help="time of the interaction (numbers or ISO 8601 times); without it the input order (file "
                        "order, then line order) is each user's time order")
    g.add_argument("--rating", default=None, metavar="COL", help="a numeric column to filter on with --min-rating")
    g.add_argument("--min-rating", type=float, default=None, metavar="R",
                   help="keep rows whose --rating is >= R (without --rating every row is a positive)")
    g.add_argument("--layout", default="rows", metavar="rows|user-items",
                   help="rows (default): one interaction per row; user-items: each line 'user item item ...' "
                        "(whitespace separated, items in time order)")
    for side in ("user", "item"):
        g = i.add_argument_group(f"{side} features (joined on the raw {side} id, as text)")
        g.add_argument(f"--{side}-features", default=None, metavar="FILE", help=f"a table with one row per {side}")
        g.add_argument(f"--{side}-key", default=None, metavar="COL", help=f"its {side} id column")
        g.add_argument(f"--{side}-sparse", action="append", default=None, metavar="COL,...",
                       help="categorical columns: a vocabulary of the whole table in sorted order "
                            "(0 = missing or unknown, 1..V)")
        g.add_argument(f"--{side}-multi-hot", action="append", default=None, metavar="COL:SEP,...",
                       help="columns of SEP-separated tokens (or list columns) -> list features")
        if side == "item":
            g.add_argument("--item-flags", action="append", default=None, metavar="NAME=C1,C2,...",
                           help="a list feature NAME from 0/1 flag columns: 1 + the index of each column that is "
                                "1 (MovieLens u.item's 19 genre flags); repeatable")
            g.add_argument("--category", default=None, metavar="FEATURE",
                           help="the item feature used by the intra-list diversity metric (default: the first "
                                "item feature)")
        g.add_argument(f"--{side}-features-columns", default=None, metavar="A,B,...",
                       help=f"field names of a headerless --{side}-features file")
    g = i.add_argument_group("filters (one pass each, not iterated)")
    g.add_argument("--min-user-interactions", type=int, default=0, metavar="N",
                   help="drop users with fewer than N interactions (counted after --min-rating and duplicates; one "
                        "pass, not iterated: dropping rare items may leave a kept user with fewer)")
    g.add_argument("--min-item-interactions", type=int, default=0, metavar="N",
                   help="drop items with fewer than N interactions (counted like --min-user-interactions, in the "
                        "same single pass)")
    g = i.add_argument_group("splits (per user)")
    g.add_argument("--split", default="random", metavar="random|leave_last_out",
                   help="random (default): each user's interactions in a seeded random order, cut by --ratios with "
                        "RecBole's per-user counts; leave_last_out: the last interaction test, the one before it "
                        "valid, the rest train (users with fewer than 3: all train)")
    g.add_argument("--ratios", default=None, metavar="TRAIN,VALID,TEST",
                   help="fractions of each user's interactions for --split random, summing to 1 (default 0.8,0.1,0.1)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the random split, --cold-items and --cold-users (default 0)")
    g.add_argument("--cold-items", type=float, default=0.0, metavar="FRACTION",
                   help="hold this seeded fraction of the items out of train and valid: all their interactions go "
                        "to test (they stay in items.parquet with train_count 0)")
    g.add_argument("--cold-users", type=float, default=0.0, metavar="FRACTION",
                   help="hold this seeded fraction of the users out of train and valid: all their interactions go "
                        "to test, where they are scored from their side features (two_tower) or get the popularity "
                        "fallback, and are reported apart as cold_user_*")
    g = i.add_argument_group("behaviour history (sequence features)")
    g.add_argument("--history", type=int, default=0, metavar="N",
                   help="give every row of every split hist_item_id: the user's previous up to N items strictly "
                        "before it (the user's whole timeline over all splits, by --time, ties by input order), "
                        "oldest first (default 0: none)")
    g.add_argument("--history-features", action="append", default=None, metavar="F1,F2,...",
                   help="one-hot item features (--item-sparse) to add as hist_<F>: the feature of each history "
                        "item, aligned with hist_item_id (needs --history)")
    g.add_argument("--train-sequences", action="store_true",
                   help="also write the split train_sequences: one row per user, its last training event, whose "
                        "history is the user's training sequence; next-item models trained on every position "
                        "read it (dataset.train_split=train_sequences, retrieval.train_positions=all); and "
                        "train_valid_sequences, the same with each user's valid item appended, for a final fit "
                        "on train and valid scored on test")
    g = i.add_argument_group("reading")
    g.add_argument("--delimiter", default=None, metavar="CHAR",
                   help="field separator of text files ('\\t' or tab for a tab); default ',' for .csv, tab for "
                        ".tsv, else the most frequent of tab, '|', ',' in the first line (else a space)")
    g.add_argument("--header", default=None, metavar="true|false",
                   help="whether text --input files start with a header line (default: true, false with --columns)")
    g.add_argument("--columns", default=None, metavar="A,B,...", help="field names of headerless --input files")
    g.add_argument("--encoding", default=None, metavar="NAME",
                   help="text encoding of every text input and feature file (default utf-8; MovieLens: latin-1)")
    i.add_argument("--overwrite", action="store_true",
                   help="replace an existing output folder (only an empty folder or a shardrec data set)")
    i.set_defaults(fn=cmd_convert_interactions, uses_torch=False)


def add_convert_parser(subparsers) -> None:
    """Add `convert` with its `criteo`, `movielens`, `table` and `interactions` subcommands to the CLI's subparsers."""
    conv = subparsers.add_parser("convert", help="convert Criteo TSV, MovieLens, any table or implicit feedback "
                                                 "to a shardrec data set")
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
    c.set_defaults(fn=cmd_convert_criteo, uses_torch=False)

    m = kinds.add_parser("movielens", help="MovieLens 100K / 1M folder -> CTR data set (label = rating >= 4)")
    m.add_argument("--input", required=True, metavar="DIR", help="folder with u.data/u.user/u.item or ratings.dat/users.dat/movies.dat")
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--split", default="0.8,0.1,0.1", help="train,valid,test fractions of a seeded random split")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--history", type=int, default=0, metavar="N",
                   help="add hist_item_id: the user's previous up to N rated movies (any rating) strictly before "
                        "each rating, by timestamp then line order, oldest first (default 0: none); the split "
                        "is the same with or without it")
    m.add_argument("--history-of", choices=["all", "liked"], default="all",
                   help="which earlier ratings make the history: all, or only the liked ones (rating >= 4, "
                        "the positive behaviours DIN and BST were published with)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    m.set_defaults(fn=cmd_convert_movielens, uses_torch=False)
    add_table_parser(kinds)
    add_interactions_parser(kinds)
