"""`shardrec report` on two run folders: a PNG of loss and AUC curves plus a markdown table;
a folder that is not a run folder is a one-line error."""

from __future__ import annotations

import pytest

from launch.cli import main
from trainer.run_dir import RunDir


def fake_run(path, auc_end: float, steps: int = 40) -> None:
    """A run folder as `run()` writes it, through the same RunDir (no training needed)."""
    rd = RunDir(path, is_main=True)
    rd.open(fresh=True)
    for step in range(10, steps + 1, 10):
        rd.log({"event": "train", "step": step, "epoch": 0, "loss": 0.7 - step / 200,
                "samples_per_s": 1000.0 + step, "lr_embeddings": 0.1, "lr_dense": 0.05})
        rd.log({"event": "eval", "split": "valid", "step": step, "auc": auc_end - (steps - step) / 400,
                "logloss": 0.6 - step / 400, "ne": 0.9, "calibration": 1.02, "accuracy": 0.8, "rows": 100})
    rd.write_summary({"model": "dlrm", "world_size": 2, "steps": steps, "samples_per_s": 1234.5,
                      "auc": auc_end, "logloss": 0.5, "ne": 0.9, "calibration": 1.02, "accuracy": 0.8,
                      "teacher_auc": 0.8})
    rd.close()


def test_report_on_two_runs_writes_png_and_table(tmp_path, capsys):
    import matplotlib.image

    fake_run(tmp_path / "dlrm", 0.71)
    fake_run(tmp_path / "dcn", 0.73)
    out = tmp_path / "cmp" / "both.png"
    assert main(["report", str(tmp_path / "dlrm"), str(tmp_path / "dcn"), "--out", str(out)]) == 0
    image = matplotlib.image.imread(out)
    assert image.shape[0] >= 400 and image.shape[1] >= 1000  # two panels side by side
    assert image.std() > 0.05  # not a blank canvas
    table = (tmp_path / "cmp" / "both.md").read_text()
    printed = capsys.readouterr().out
    lines = [line for line in table.splitlines() if line.startswith("| dlrm") or line.startswith("| dcn")]
    assert len(lines) == 2 and "0.7100" in lines[0] and "0.7300" in lines[1]
    assert "| AUC |" in table and "NE" in table and lines[0] in printed


def test_report_of_one_run_goes_into_its_folder(tmp_path, capsys):
    fake_run(tmp_path / "only", 0.7)
    assert main(["report", str(tmp_path / "only")]) == 0
    assert (tmp_path / "only" / "report.png").stat().st_size > 10_000
    assert (tmp_path / "only" / "report.md").is_file()


@pytest.mark.parametrize("make", ["empty", "missing"])
def test_not_a_run_folder_is_one_line(tmp_path, capsys, make):
    folder = tmp_path / "nope"
    if make == "empty":
        folder.mkdir()
    fake_run(tmp_path / "good", 0.7)
    assert main(["report", str(tmp_path / "good"), str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("shardrec: error:") and str(folder) in err[0]
