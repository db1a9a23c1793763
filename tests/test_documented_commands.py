"""Every command the README and the guide show runs, on small data, so that a documented
command cannot break silently.

Each document's commands run in order in one scratch folder (so `synth --out data/mine` feeds
the next `train --dataset.path=data/mine`), with the repository's configs/ and launch/ linked
in and a few substitutions that keep each command under ~30 s: fewer rows, 2 processes
instead of 8 (and plans for 8 ranks instead of 64), small stand-ins for Criteo day files
and MovieLens folders. A command not run here must match SKIPPED, which says why; a new
command in the docs runs by default.
"""

from __future__ import annotations

import gzip
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from doc_commands import Command, commands

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHARED = ROOT.parent / "shared"
ML100K = SHARED / "data" / "movielens_100k"
pytestmark = pytest.mark.slow

# Lines of the code blocks that are commands (the rest are output samples and layouts).
COMMAND = re.compile(r"^(make|\.venv/bin/|shardrec |python |torchrun |ray |export |tensorboard |docker )")

SKIPPED = {
    r"^make demo": "takes ~35 s plus the install check; the README's timing comes from running it",
    r"^make test": "this suite",
    r"^python -m venv|^\.venv/bin/pip install": "the GPU install downloads CUDA wheels",
    r"^ray |^export RAY_": "tests/launch/test_ray_job_submit.py runs these against a real Ray head",
    r"^tensorboard ": "starts a server",
    r"^docker ": "no Docker engine on the test machines",
}

# (pattern, replacement) applied in order to every command that runs.
SUBSTITUTIONS = [
    (r"^\.venv/bin/", f"{BIN}/"),
    (r"^(shardrec|torchrun) ", rf"{BIN}/\1 "),
    (r"--rows \d+", "--rows 20000"),
    (r"--nproc_per_node=\d+", "--nproc_per_node=2"),
    (r"--world-size (\d{2,})", "--world-size 8"),         # planning for 64 ranks: 16 s, for 8: 6 s
    (r"--dataset\.path=/\S+", "--dataset.path=data/tiny"),  # a cluster path: the tiny stand-in
    (r" \.\.\. ", " "),                                      # "day_0.gz day_1.gz ... --out"
    # Retrieval presets train for minutes (up to 300 epochs): one epoch shows the command works.
    (r"--config (mf|ncf|two_tower|lightgcn)_movielens", r"--config \1_movielens --train.epochs=1"),
]


# The guide's retrieval commands: their data set comes from ../shared/data.
RETRIEVAL_RUNS = re.compile(r"--config (mf|ncf|two_tower|lightgcn)_movielens|--run-dir runs/(mf|lgcn)\b")


def _skip_reason(text: str) -> str | None:
    return next((why for pattern, why in SKIPPED.items() if re.search(pattern, text)), None)


def _runnable(doc: str) -> list[Command]:
    return [c for c in commands(doc) if COMMAND.match(c.text)]


def _criteo_line(i: int) -> str:
    dense = [str(i % 7 - 2) if (i + k) % 5 else "" for k in range(13)]
    cats = [f"{(i * 2654435761 + k * 97) % (1 << 32):08x}" if (i + k) % 6 else "" for k in range(26)]
    return "\t".join([str(i % 2), *dense, *cats])


def _workspace(path: Path, tiny_data: str) -> Path:
    """The scratch folder: the repository's configs and launch folders, tiny data, Criteo
    day files and MovieLens folders as the docs name them."""
    path.mkdir()
    for name in ("configs", "launch"):
        (path / name).symlink_to(ROOT / name)
    (path / "tests").mkdir()
    (path / "tests" / "data").symlink_to(ROOT / "tests" / "data")
    (path / "data").mkdir()
    (path / "tiny_data").symlink_to(tiny_data)  # data/tiny, unless the document makes its own
    lines = "".join(_criteo_line(i) + "\n" for i in range(3000))
    for day in ("day_0", "day_1", "day_23"):
        with gzip.open(path / f"{day}.gz", "wt") as f:
            f.write(lines)
    (path / "train.txt").write_text(lines)
    if (ML100K / "u.data").is_file():
        (path / "ml-100k").symlink_to(ML100K)
    ml1m = path / "ml-1m"
    ml1m.mkdir()
    genders, ages, genres = "FM", (1, 18, 25, 35, 45, 56), ("Action", "Comedy", "Drama|Romance", "Animation")
    (ml1m / "users.dat").write_text("".join(f"{u}::{genders[u % 2]}::{ages[u % 6]}::{u % 21}::{10000 + u}\n"
                                            for u in range(1, 41)))
    (ml1m / "movies.dat").write_text("".join(f"{m}::Movie {m} ({1980 + m})::{genres[m % 4]}\n" for m in range(1, 21)))
    # A rating that depends on the user and the movie, so there is something to learn.
    ratings = [f"{u}::{m}::{(u * m) % 5 + 1}::{978300000 + 100 * k + u}\n"
               for k in range(3) for u in range(1, 41) for m in range(1, 21)]
    (ml1m / "ratings.dat").write_text("".join(ratings))
    return path


def _prepare(text: str, cwd: Path) -> str:
    for pattern, replacement in SUBSTITUTIONS:
        text = re.sub(pattern, replacement, text)
    words = shlex.split(text)
    if "report" in words:
        # Only the run folders the document's earlier commands made (it names three models).
        words = [w for w in words if not w.startswith("runs/") or (cwd / w).exists() or w.endswith(".png")]
    if "--checkpoint" in words and "/step_" in words[words.index("--checkpoint") + 1]:
        # The guide's step_4000 is from a long run: take the newest checkpoint there is.
        i = words.index("--checkpoint") + 1
        folder = cwd / Path(words[i]).parent
        words[i] = str(max(folder.glob("step_*"), key=lambda p: int(p.name.split("_")[1])))
    if any(w.endswith("/torchrun") for w in words[:1]) or "train" in words:
        words.append("--train.num_threads=1")  # two cores: processes must not fight over threads
    return shlex.join(words)


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("docs")
    if (SHARED / "data").is_dir():  # commands that read ../shared/data/... in place, as from the repository
        (root / "shared").symlink_to(SHARED)
    return {doc: _workspace(root / doc.replace("/", "_"), tiny_data) for doc in ("README.md", "docs/guide.md")}


@pytest.mark.parametrize("command", [c for doc in ("README.md", "docs/guide.md") for c in _runnable(doc)], ids=str)
def test_documented_command_runs(command: Command, workspaces):
    why = _skip_reason(command.text)
    if why:
        pytest.skip(why)
    cwd = workspaces[command.doc]
    if "ml-100k" in command.text and not (cwd / "ml-100k").exists():
        pytest.skip(f"the MovieLens 100K sample is not at {ML100K}")
    if "../shared/data/" in command.text and not (cwd.parent / "shared").exists():
        pytest.skip(f"the shared data samples are not at {SHARED / 'data'} (../shared/data is CI-only)")
    if RETRIEVAL_RUNS.search(command.text) and not (cwd.parent / "shared").exists():
        pytest.skip("trains on (or reads a run of) the retrieval data set a ../shared/data command above makes")
    prepared = _prepare(command.text, cwd)
    if re.search(r"\btiny\b", prepared) and " synth " not in prepared and not (cwd / "data" / "tiny").exists():
        (cwd / "data" / "tiny").symlink_to((cwd / "tiny_data").resolve())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(prepared, shell=True, cwd=cwd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, f"{command}\nran as: {prepared}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def test_every_documented_command_is_run_or_skipped_for_a_reason():
    """A skip pattern that matches nothing any more is stale: remove it."""
    texts = [c.text for doc in ("README.md", "docs/guide.md") for c in _runnable(doc)]
    for pattern in SKIPPED:
        assert any(re.search(pattern, t) for t in texts), f"SKIPPED pattern {pattern!r} matches no command"
