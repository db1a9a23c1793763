"""torchrun entry: `torchrun --nproc_per_node=N -m shardrec.launch.torchrun --config FILE [--key=value ...]`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; trainer.distributed joins that
group (NCCL on CUDA, gloo on CPU) and `run(cfg)` does the rest. Only rank 0 prints.

`checkpoint.resume` defaults to `auto` here, so one command starts a job and, with
`torchrun --max-restarts=N`, brings it back from its newest checkpoint after a worker dies.
"""

from __future__ import annotations

import argparse
import os
import sys

from shardrec.configs.errors import UserError


def main(argv: list[str] | None = None) -> int:
    from shardrec.launch.cli import (
        CONFIG_HELP,
        add_run_dir_args,
        print_summary,
        resume_auto_by_default,
        run_dir_overrides,
    )
    from shardrec.launch.console import quiet_libraries

    p = argparse.ArgumentParser(prog="python -m shardrec.launch.torchrun")
    p.add_argument("--config", required=True, help=CONFIG_HELP)
    add_run_dir_args(p, "output folder (default runs/<model>-<time>)")
    args, extra = p.parse_known_args(argv)
    quiet_libraries()
    rank = int(os.environ.get("RANK", "0"))
    try:
        from shardrec.configs.loader import load_config
        from shardrec.trainer.loop import run

        cfg = load_config(args.config, extra + run_dir_overrides(args))
        resume_auto_by_default(cfg, extra)
        if not cfg.run_dir and os.environ.get("TORCHELASTIC_RUN_ID"):
            # The same folder for every restart of this job (a timestamp would differ).
            cfg.run_dir = f"runs/{cfg.model.name}-{os.environ['TORCHELASTIC_RUN_ID']}"
        summary = run(cfg)
    except UserError as e:
        print(f"shardrec: error (rank {rank}): {e}", file=sys.stderr)
        return 2
    if rank == 0:
        print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
