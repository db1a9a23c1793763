"""The `shardrec` command as a user runs it: user mistakes give one line and exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def shardrec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shardrec", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("shardrec: error:")]
    assert len(errors) == 1, proc.stderr
    for w in words:
        assert w in errors[0], errors[0]


def test_typo_in_a_key(tiny_data):
    proc = shardrec("train", "--config", "tiny", f"--dataset.path={tiny_data}", "--train.bach_size=8")
    assert_one_line_error(proc, "'train.bach_size'", "did you mean 'train.batch_size'")


def test_missing_data_folder(tmp_path):
    proc = shardrec("train", "--config", "tiny", f"--dataset.path={tmp_path / 'nowhere'}",
                    f"--run-dir={tmp_path / 'run'}")
    assert_one_line_error(proc, str(tmp_path / "nowhere"), "does not exist", "shardrec synth")


def test_schema_that_does_not_match_the_shards(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    schema = json.loads((data / "schema.json").read_text())
    schema["dense"].append("I14")
    (data / "schema.json").write_text(json.dumps(schema))
    proc = shardrec("train", "--config", "tiny", f"--dataset.path={data}", f"--run-dir={tmp_path / 'run'}")
    assert_one_line_error(proc, "part-00000.parquet", "'I14'", "missing")


def test_unknown_model_name(tiny_data, tmp_path):
    proc = shardrec("train", "--config", "tiny", f"--dataset.path={tiny_data}", "--model.name=dlrn",
                    f"--run-dir={tmp_path / 'run'}")
    assert_one_line_error(proc, "'model.name'", "'dlrn'", "dlrm")


def test_synth_refuses_to_overwrite(tmp_path):
    (tmp_path / "d").mkdir()
    proc = shardrec("synth", "--out", str(tmp_path / "d"), "--rows", "100", "--preset", "tiny")
    assert_one_line_error(proc, str(tmp_path / "d"), "already exists", "--overwrite")


@pytest.mark.slow
def test_synth_train_eval_from_the_command_line(tmp_path):
    data, run_dir = tmp_path / "data", tmp_path / "run"
    proc = shardrec("synth", "--out", str(data), "--rows", "12000", "--preset", "tiny", "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    assert "teacher AUC" in proc.stdout
    proc = shardrec("train", "--config", "tiny", f"--dataset.path={data}", "--run-dir", str(run_dir),
                    "--train.log_every=5")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"test AUC {summary['auc']:.4f}" in proc.stdout
    assert "samples/s" in proc.stdout  # non-interactive progress lines
    proc = shardrec("eval", "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["auc"] == summary["auc"]


def test_version_and_models_list_every_model_and_flavor(capsys):
    from shardrec.launch.cli import main
    from shardrec.trainer.registry import MODELS

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("shardrec ")
    assert main(["models", "--schema", "tiny"]) == 0
    out = capsys.readouterr().out
    for name, spec in MODELS.items():
        for flavor in spec.flavors:
            assert f"`{name}`" in out and f"| `{flavor}` |" in out
    # debug DLRM on the tiny schema: 8-wide tables over the capped table sizes
    row = next(line for line in out.splitlines() if line.startswith("| `dlrm` | `debug`"))
    assert "| 249,496 |" in row and "`tiny`" in row


def test_ray_data_source_outside_ray_is_one_line(tiny_data, tmp_path, capsys):
    pytest.importorskip("ray.train")
    from shardrec.launch.cli import main

    rc = main(["train", "--config", "tiny", f"--dataset.path={tiny_data}", "--run-dir", str(tmp_path / "run"),
               "--dataset.source=ray_data"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["shardrec: error: dataset.source 'ray_data' works only under `shardrec ray`, "
                               "which hands each worker its Ray Data shard"]
    assert not (tmp_path / "run").exists()


def test_help_names_every_preset(capsys):
    from shardrec.configs.loader import preset_names
    from shardrec.launch.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in preset_names()) and len(preset_names()) >= 20
