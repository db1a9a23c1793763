"""The `shardrec` command line: synth, train, eval.

Every subcommand turns its arguments into a config or a spec and calls library code; a
`UserError` (bad key, missing folder, mismatched schema) prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from shardrec.configs.errors import UserError
from shardrec.launch.console import quiet_libraries
from shardrec.launch.convert_cmd import add_convert_parser
from shardrec.launch.report_cmd import add_report_parser


def cmd_synth(args: argparse.Namespace, extra: list[str]) -> int:
    from shardrec.data_pipeline.synth import generate, spec_from_preset

    _no_extra(extra)
    from tqdm import tqdm

    spec = spec_from_preset(args.preset, args.rows, seed=args.seed,
                            max_table_size=args.max_table_size, multi_hot=args.multi_hot,
                            zipf_alpha=args.zipf_alpha)
    # A bar on a terminal (disable=None: off when stderr is not one).
    with tqdm(total=args.rows, desc="synth", unit="row", unit_scale=True, disable=None, leave=False) as bar:
        done: dict[str, int] = {}

        def progress(split: str, rows_done: int, _rows: int) -> None:
            bar.update(rows_done - done.get(split, 0))
            done[split] = rows_done

        schema = generate(spec, args.out, overwrite=args.overwrite, progress=progress)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v:,} rows" for k, v in schema.splits.items())
          + "; teacher AUC " + ", ".join(f"{k} {v:.4f}" for k, v in schema.teacher_auc.items()))
    return 0


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from shardrec.configs.loader import load_config
    from shardrec.trainer.loop import run

    cfg = load_config(args.config, extra + run_dir_overrides(args))
    summary = run(cfg)
    print_summary(summary)
    return 0


def run_dir_overrides(args: argparse.Namespace) -> list[str]:
    """--run-dir DIR and --overwrite as the config overrides they stand for."""
    out = [f"--run_dir={args.run_dir}"] if args.run_dir else []
    return out + (["--overwrite=true"] if getattr(args, "overwrite", False) else [])


def resume_auto_by_default(cfg, extra: list[str]) -> None:
    """Launches that may be restarted (torchrun, Ray) resume by default: `auto` unless the
    config or the command line names another `checkpoint.resume`."""
    if not cfg.checkpoint.resume and not any(a.replace("-", "_").startswith("--checkpoint.resume=") for a in extra):
        cfg.checkpoint.resume = "auto"


def add_run_dir_args(p: argparse.ArgumentParser, help_dir: str) -> None:
    p.add_argument("--run-dir", default=None, help=help_dir)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run's checkpoints and summary in the run folder instead of refusing")


def cmd_ray(args: argparse.Namespace, extra: list[str]) -> int:
    from shardrec.configs.loader import load_config
    from shardrec.launch.ray_launcher import launch

    overrides = [f"--ray.num_workers={args.num_workers}"] if args.num_workers else []
    cfg = load_config(args.config, extra + overrides + run_dir_overrides(args))
    resume_auto_by_default(cfg, extra)
    print_summary(launch(cfg))
    return 0


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    from shardrec.configs.loader import load_config
    from shardrec.trainer.loop import evaluate_checkpoint

    config = Path(args.run_dir) / "config.yaml"
    if not config.is_file():
        raise UserError(f"'{args.run_dir}' is not a run folder (no config.yaml)")
    cfg = load_config(str(config), extra + [f"--run_dir={args.run_dir}"])
    metrics = evaluate_checkpoint(cfg, args.checkpoint, args.split)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank has the same metrics
        print(json.dumps(metrics, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace, extra: list[str]) -> int:

    from shardrec.trainer.predict import predict

    _no_extra(extra)
    keep = [c for part in args.keep for c in part.split(",") if c]
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        rows = predict(args.run_dir, args.input, args.out, keep, args.checkpoint, args.batch_size)
    else:  # under torchrun: each rank scores its share of the batches; rank 0 joins them
        import torch.distributed as dist

        dist.init_process_group("gloo")
        try:
            rows = predict(args.run_dir, args.input, args.out, keep, args.checkpoint, args.batch_size,
                           rank=dist.get_rank(), world_size=world_size, barrier=dist.barrier)
            totals = [0] * world_size
            dist.all_gather_object(totals, rows)
            rows = sum(totals)
        finally:
            dist.destroy_process_group()
        if int(os.environ.get("RANK", "0")) != 0:
            return 0
    print(f"scored {rows:,} rows into {args.out}")
    return 0


def cmd_export(args: argparse.Namespace, extra: list[str]) -> int:
    from shardrec.trainer.export import export_run

    _no_extra(extra)
    manifest = export_run(args.run_dir, args.out, args.checkpoint, args.overwrite)
    print(f"exported {manifest['model']}/{manifest['flavor']} (step {manifest['step']}) to {args.out}: "
          f"model.pt2 (torch.export), weights.pt; load it as {args.out}/README.md shows")
    return 0


def cmd_recommend(args: argparse.Namespace, extra: list[str]) -> int:
    from shardrec.trainer.recommend import recommend

    _no_extra(extra)
    users = recommend(args.run_dir, args.out, args.k, args.users, args.checkpoint, args.batch_size, args.index)
    print(f"wrote the top {args.k} items of {users:,} users to {args.out}")
    return 0


def cmd_models(args: argparse.Namespace, extra: list[str]) -> int:
    from shardrec.trainer.catalog import render

    _no_extra(extra)
    print(render(args.schema), end="")
    return 0


def cmd_plan(args: argparse.Namespace, extra: list[str]) -> int:
    import torch
    from shardrec.configs.loader import load_config
    from shardrec.data_pipeline.schema import load_schema
    from shardrec.embeddings.plan_report import format_report, plan_offline
    from shardrec.trainer.registry import build_model
    from shardrec.trainer.task import ClickTask

    cfg = load_config(args.config, extra)
    if args.schema == "mlperf":
        from shardrec.trainer.models.dlrm_dcn import mlperf_schema

        schema = mlperf_schema()
    else:
        schema = load_schema(args.schema or cfg.dataset.path)
    from shardrec.trainer.loop import resolve_batch_size

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    model = ClickTask(build_model(schema, cfg.model, torch.device("meta")))
    resolve_batch_size(cfg, args.world_size)  # train.global_batch_size, as train does
    report = plan_offline(model, cfg.embeddings, args.world_size, device, args.memory_gb,
                          cfg.train.batch_size)
    print(f"{cfg.model.name}/{cfg.model.flavor} on {args.world_size} x {device} "
          f"({report.memory_gb_per_rank:g} GiB each), batch {cfg.train.batch_size} per rank, "
          f"{cfg.embeddings.weights_dtype} tables\n")
    print(format_report(report))
    return 0


def print_summary(s: dict) -> None:
    if any(k.startswith("hr@") for k in s):
        return print_next_item_summary(s)
    if "auc" not in s:
        return print_retrieval_summary(s)
    auc = f"test AUC {s['auc']:.4f}"
    if "teacher_auc" in s:
        t = s["teacher_auc"]
        auc += f" (teacher {t:.4f}; reached {(s['auc'] - 0.5) / (t - 0.5):.1%} of the teacher's lift over 0.5)"
    if "best_step" in s:
        auc += (f" | best valid {s['best_metric']} {s['best_value']:.4f} at step {s['best_step']}"
                + (" (stopped early)" if s["stopped_early"] else ""))
    print(f"\n{s['model']}/{s['flavor']}: {auc}\n"
          f"logloss {s['logloss']:.4f}, NE {s.get('ne', float('nan')):.4f}, "
          f"calibration {s.get('calibration', float('nan')):.3f} | {s['steps']} steps, {s['samples']:,} samples in {s['wall_s']:.1f}s "
          f"= {s['samples_per_s']:,.0f} samples/s | world size {s['world_size']}\n"
          f"run folder: {s['run_dir']}")


def _best(s: dict) -> str:
    if "best_step" not in s:
        return ""
    return (f" | best valid {s['best_metric']} {s['best_value']:.4f} at step {s['best_step']}"
            + (" (stopped early)" if s["stopped_early"] else ""))


def print_next_item_summary(s: dict) -> None:
    ks = sorted({int(k.split("@")[1]) for k in s if k.startswith("hr@") and not k.endswith("_full")})
    lines = [f"\n{s['model']}/{s['flavor']}: next item on {s['eval_split']} ({int(s['rows']):,} events)" + _best(s)]
    for k in ks:
        lines.append(f"hr@{k} {s[f'hr@{k}']:.4f}  ndcg@{k} {s[f'ndcg@{k}']:.4f} (against sampled negatives)  "
                     f"hr@{k}_full {s[f'hr@{k}_full']:.4f}  ndcg@{k}_full {s[f'ndcg@{k}_full']:.4f} (whole catalogue)")
    lines.append(f"{s['steps']} steps, {s['samples']:,} samples in {s['wall_s']:.1f}s = {s['samples_per_s']:,.0f} "
                 f"samples/s | world size {s['world_size']}\nrun folder: {s['run_dir']}")
    print("\n".join(lines))


def print_retrieval_summary(s: dict) -> None:
    ks = sorted({int(k.split("@")[1]) for k in s if k.startswith("recall@")})
    lines = [f"\n{s['model']}/{s['flavor']} on {s['eval_split']} ({int(s['users']):,} users, full ranking)"
             + _best(s)]
    for k in ks:
        line = "  ".join(f"{m}@{k} {s[f'{m}@{k}']:.4f}" for m in ("recall", "ndcg", "precision", "hit", "mrr",
                                                                 "coverage"))
        if f"popularity_recall@{k}" in s:
            line += f"  (popularity: recall@{k} {s[f'popularity_recall@{k}']:.4f}, " \
                    f"ndcg@{k} {s[f'popularity_ndcg@{k}']:.4f})"
        lines.append(line)
    if ks and f"cold_recall@{ks[0]}" in s:
        k = ks[0]
        lines.append(f"cold items: recall@{k} {s[f'cold_recall@{k}']:.4f}"
                     + (f" (popularity fallback {s[f'popularity_cold_recall@{k}']:.4f})"
                        if f"popularity_cold_recall@{k}" in s else ""))
    lines.append(f"{s['steps']} steps, {s['samples']:,} samples in {s['wall_s']:.1f}s = {s['samples_per_s']:,.0f} "
                 f"samples/s | world size {s['world_size']}\nrun folder: {s['run_dir']}")
    print("\n".join(lines))


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("shardrec")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _no_extra(extra: list[str]) -> None:
    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")


def _config_help() -> str:
    from shardrec.configs.loader import preset_names

    return "a YAML file, or one of the presets in configs/: " + ", ".join(preset_names())


CONFIG_HELP = _config_help()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shardrec", description="Train ranking models with sharded embeddings.")
    p.add_argument("--version", action="version", version=f"shardrec {version()}")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("models", help="list every model with its flavors, parameter counts and presets")
    m.add_argument("--schema", default="criteo-kaggle",
                   help="a data set folder, or a synth preset (criteo-kaggle, demo, tiny, tiny-multihot, bench-dlrm) "
                        "whose table sizes the parameter counts use")
    m.set_defaults(fn=cmd_models)

    s = sub.add_parser("synth", help="write a synthetic Criteo-shaped data set with a hidden teacher")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--rows", type=int, required=True, help="rows in all (split 80/10/10 into train/valid/test)")
    s.add_argument("--preset", default="criteo-kaggle", help="table sizes: criteo-kaggle, demo, tiny, tiny-multihot, bench-dlrm")
    s.add_argument("--max-table-size", type=int, default=None, help="cap every table at this many rows")
    s.add_argument("--multi-hot", type=int, default=None, help="the last 6 features get up to N ids per row")
    s.add_argument("--zipf-alpha", type=float, default=None, help="power-law exponent of id frequencies")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    s.set_defaults(fn=cmd_synth)
    add_convert_parser(sub)
    add_report_parser(sub)

    t = sub.add_parser("train", help="train a model (single process, or under torchrun / Ray)",
                       epilog="Any --section.key=value overrides the config, e.g. --train.batch_size=4096")
    t.add_argument("--config", required=True, help=CONFIG_HELP)
    add_run_dir_args(t, "output folder (default runs/<model>-<time>)")
    t.set_defaults(fn=cmd_train)

    pl = sub.add_parser("plan", help="print the sharding plan and memory per rank, without training",
                        epilog="Any --section.key=value overrides the config, e.g. --model.flavor=mlperf")
    pl.add_argument("--config", required=True, help=CONFIG_HELP)
    pl.add_argument("--world-size", type=int, required=True, help="number of ranks (GPUs or processes)")
    pl.add_argument("--device", choices=["cuda", "cpu"], default=None,
                    help="device of the ranks (default: this machine's, as `train` would use)")
    pl.add_argument("--memory-gb", type=float, default=None,
                    help="memory per rank: GPU HBM, or host memory on cpu (default embeddings.memory_gb_per_rank, "
                         "or what this machine has; needed for --device cuda on a machine without one)")
    pl.add_argument("--schema", default=None,
                    help="dataset folder whose schema.json sizes the tables (default dataset.path), "
                         "or 'mlperf' for the MLPerf DLRM-DCNv2 reference tables")
    pl.set_defaults(fn=cmd_plan)

    r = sub.add_parser("ray", help="train on a Ray cluster with Ray Train (the `ray job submit` entry)",
                       epilog="Any --section.key=value overrides the config, e.g. --dataset.source=ray_data")
    r.add_argument("--config", required=True, help=CONFIG_HELP)
    r.add_argument("--num-workers", type=int, default=None, help="Ray Train workers (default ray.num_workers)")
    add_run_dir_args(r, "output folder, on storage every node sees")
    r.set_defaults(fn=cmd_ray)

    e = sub.add_parser("eval", help="score a run's checkpoint on a split")
    e.add_argument("--run-dir", required=True, help="a run folder written by `shardrec train`")
    e.add_argument("--checkpoint", default=None,
                   help="checkpoint folder, or `best` (the weights early stopping kept); default: the latest")
    e.add_argument("--split", default=None, help="split to score (default: eval.split of the run's config)")
    e.set_defaults(fn=cmd_eval)

    checkpoint_help = "checkpoint folder, or `best` (the weights early stopping kept); default: the latest"
    pr = sub.add_parser("predict", help="score rows with a trained model (raw rows or the data set's format)",
                        epilog="Under torchrun (`torchrun --nproc_per_node=N -m shardrec predict ...`) each rank "
                               "scores its share; the output keeps the input's row order.")
    pr.add_argument("--run-dir", required=True, help="a run folder written by `shardrec train`")
    pr.add_argument("--checkpoint", default=None, help=checkpoint_help)
    pr.add_argument("--input", nargs="+", required=True,
                    help="files (Parquet in the data set's format, e.g. a split folder, or raw CSV/Parquet/JSON "
                         "lines rows of a `convert table` data set, encoded with its saved vocabularies)")
    pr.add_argument("--out", required=True, help="output Parquet file: the --keep columns and `score`")
    pr.add_argument("--keep", action="append", default=[], help="input columns to copy into the output (COL,...)")
    pr.add_argument("--batch-size", type=int, default=8192, help="rows scored at a time")
    pr.set_defaults(fn=cmd_predict)

    ex = sub.add_parser("export", help="write the model as one unsharded torch.export program + weights")
    ex.add_argument("--run-dir", required=True, help="a run folder written by `shardrec train`")
    ex.add_argument("--checkpoint", default=None, help=checkpoint_help)
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    ex.set_defaults(fn=cmd_export)

    rc = sub.add_parser("recommend", help="the top K unseen items per user from a trained retrieval model",
                        epilog="Output columns: user, rank, item (raw ids), score, source (model, or popularity "
                               "for users the data set does not know or training never saw).")
    rc.add_argument("--run-dir", required=True, help="a run folder of a retrieval model (mf, ncf, two_tower, lightgcn)")
    rc.add_argument("--checkpoint", default=None, help=checkpoint_help)
    rc.add_argument("--k", type=int, required=True, help="items per user")
    rc.add_argument("--users", default=None,
                    help="raw user ids to recommend for: a text file (one per line) or a Parquet file with a "
                         "`user` column (default: every user of the data set)")
    rc.add_argument("--out", required=True, help="output Parquet file")
    rc.add_argument("--batch-size", type=int, default=1024, help="users scored against the catalogue at a time")
    rc.add_argument("--index", choices=["exact", "faiss"], default="exact",
                    help="exact: score every item (default); faiss: approximate nearest neighbours in a FAISS HNSW "
                         "graph, for catalogues of millions of items (needs faiss-cpu; inner-product models)")
    rc.set_defaults(fn=cmd_recommend)
    return p


def main(argv: list[str] | None = None) -> int:
    args, extra = parser().parse_known_args(argv)
    quiet_libraries(uses_torch=getattr(args, "uses_torch", True))
    try:
        return args.fn(args, extra)
    except UserError as e:
        print(f"shardrec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shardrec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
