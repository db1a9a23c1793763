"""`shardrec report RUN_DIR [RUN_DIR ...] [--out FILE.png]`: curves and a table of final metrics.

    shardrec report runs/dlrm runs/dcn --out cmp.png   # writes cmp.png and cmp.md
"""

from __future__ import annotations

import argparse

from shardrec.configs.errors import UserError


def cmd_report(args: argparse.Namespace, extra: list[str]) -> int:
    from shardrec.trainer.report import write_report

    if extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    skipped: list[str] = []
    png, md, table = write_report(args.run_dirs, args.out, skipped)
    for folder in skipped:
        print(f"skipped {folder}: no metrics.jsonl or summary.json (a run that stopped before its first step?)")
    print(table)
    print(f"wrote {png} and {md}")
    return 0


def add_report_parser(subparsers) -> None:
    """Add `report` to the CLI's subparsers."""
    r = subparsers.add_parser("report", help="plot loss and AUC of one or more runs; print their final metrics")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders written by `shardrec train`")
    r.add_argument("--out", default=None,
                   help="PNG to write; a .md table goes next to it "
                        "(default RUN_DIR/report.png for one run, ./report.png for several)")
    r.set_defaults(fn=cmd_report, uses_torch=False)
