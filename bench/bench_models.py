"""The model zoo on MovieLens 100K (CTR) or on synthetic teacher data, in one process.

    .venv/bin/python bench/bench_models.py                        # MovieLens 100K, every model
    .venv/bin/python bench/bench_models.py --models deepfm,lr     # a subset (lr is always added)
    .venv/bin/python bench/bench_models.py --synthetic --data /tmp/demo_zoo

MovieLens: converts --input (GroupLens ml-100k) to a temporary folder (label = rating >= 4,
seeded 80/10/10 split), trains each model with configs/<model>_movielens.yaml for --seeds
seeds (`train.seed` 0, 1, ...; the presets stop early on the validation AUC and score their
best weights) and prints the mean test AUC / logloss, the AUC per seed, and the difference to
logistic regression measured in the same run. Floors (mean test AUC): every model but lr
>= 0.785; deepfm, wide_deep, dcnv2 and dlrm_dcn >= 0.790.

Synthetic: trains each model with configs/<model>_criteo.yaml on --data (made with
`shardrec synth --out DIR --rows 1250000 --preset demo` if absent) and prints the share of the
hidden teacher's lift over a coin flip reached: (AUC - 0.5) / (teacher AUC - 0.5) >= 0.9.
Exit status 1 when a floor is missed. Extra `--key=value` arguments override every preset.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MOVIELENS = "/work/shared/data/movielens_100k"
AUC_FLOOR, TEACHER_SHARE = 0.785, 0.9
HIGHER_FLOOR, HIGHER_FLOOR_MODELS = 0.790, ("deepfm", "wide_deep", "dcnv2", "dlrm_dcn")


def train(model: str, preset: str, data: str, runs: Path, overrides: list[str], seed: int = 0) -> dict:
    from shardrec.configs.loader import load_config
    from shardrec.trainer.loop import run

    cfg = load_config(f"{model}_{preset}", [f"--dataset.path={data}", f"--run_dir={runs / f'{model}-{seed}'}",
                                            "--checkpoint.save_final=false", "--train.progress=false",
                                            "--train.log_every=1000000", f"--train.seed={seed}", *overrides])
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # progress lines; stdout keeps the table
        summary = run(cfg)
    summary["total_s"] = time.perf_counter() - start
    print(f"  {model:10s} AUC {summary['auc']:.4f} logloss {summary['logloss']:.4f} "
          f"({summary['total_s']:.1f}s)", file=sys.stderr, flush=True)
    return summary


def movielens_table(results: dict[str, list[dict]]) -> tuple[str, bool]:
    import statistics

    def mean(runs: list[dict], key: str) -> float:
        return statistics.mean(s[key] for s in runs)

    lr_auc = mean(results["lr"], "auc")
    lines = ["| model | flavor | test AUC (mean) | per seed | test logloss | AUC - lr AUC | best step "
             "| train s | floor |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    ok = True
    for name, runs in results.items():
        auc = mean(runs, "auc")
        if name == "lr":
            verdict = "baseline"
        else:
            floor = HIGHER_FLOOR if name in HIGHER_FLOOR_MODELS else AUC_FLOOR
            ok &= auc >= floor
            verdict = f">= {floor}: " + ("ok" if auc >= floor else "MISSED")
        seeds = ", ".join(f"{s['auc']:.4f}" for s in runs)
        steps = ", ".join(str(s.get("best_step", s["steps"])) for s in runs)
        lines.append(f"| {name} | {runs[0]['flavor']} | {auc:.4f} | {seeds} | {mean(runs, 'logloss'):.4f} "
                     f"| {auc - lr_auc:+.4f} | {steps} | {mean(runs, 'wall_s'):.1f} | {verdict} |")
    return "\n".join(lines), ok


def synthetic_table(results: dict[str, dict]) -> tuple[str, bool]:
    from shardrec.trainer.registry import MODELS

    lines = ["| model | flavor | test AUC | teacher AUC | share of teacher lift | test logloss "
             "| train s | floor |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    ok = True
    for name, s in results.items():
        share = (s["auc"] - 0.5) / (s["teacher_auc"] - 0.5)
        if MODELS[name].baseline:
            verdict = "baseline"
        else:
            ok &= share >= TEACHER_SHARE
            verdict = "ok" if share >= TEACHER_SHARE else "MISSED"
        lines.append(f"| {name} | {s['flavor']} | {s['auc']:.4f} | {s['teacher_auc']:.4f} | {share:.1%} "
                     f"| {s['logloss']:.4f} | {s['wall_s']:.1f} | {verdict} |")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="", help="comma-separated registry names (default: all)")
    parser.add_argument("--synthetic", action="store_true", help="criteo presets on synthetic teacher data")
    parser.add_argument("--input", default=MOVIELENS, help="MovieLens 100K folder (GroupLens ml-100k)")
    parser.add_argument("--data", default="/tmp/demo_zoo", help="synthetic data folder (--synthetic)")
    parser.add_argument("--rows", type=int, default=1_250_000, help="rows to generate if --data is absent")
    parser.add_argument("--keep", action="store_true", help="keep the converted data and run folders")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per model (MovieLens; synthetic uses 1)")
    args, overrides = parser.parse_known_args(argv)
    from shardrec.launch.console import quiet_libraries

    quiet_libraries()

    from shardrec.trainer.registry import MODELS, click_models

    names = [n for n in args.models.split(",") if n] or click_models()
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    names = ["lr"] + [n for n in names if n != "lr"]  # the baseline first
    work = Path(tempfile.mkdtemp(prefix="shardrec_bench_models_"))

    if args.synthetic:
        data = args.data
        if not (Path(data) / "schema.json").is_file():
            from shardrec.data_pipeline.synth import generate, spec_from_preset

            generate(spec_from_preset("demo", args.rows), data)
        preset = "criteo"
    else:
        from shardrec.data_pipeline.convert_movielens import convert_movielens

        data = str(work / "movielens")
        convert_movielens(args.input, data, seed=0, split=(0.8, 0.1, 0.1))
        preset = "movielens"
    print(f"data: {data}; presets configs/<model>_{preset}.yaml; runs in {work}"
          + ("" if args.keep else " (deleted at the end; --keep keeps them)"), file=sys.stderr)

    try:
        seeds = 1 if args.synthetic else args.seeds
        runs = {name: [train(name, preset, data, work / "runs", overrides, seed) for seed in range(seeds)]
                for name in names}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table, ok = (synthetic_table({n: r[0] for n, r in runs.items()}) if args.synthetic
                 else movielens_table(runs))
    print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
