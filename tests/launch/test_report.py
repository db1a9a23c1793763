"""`shardrec report` on two run folders: a PNG of loss and AUC curves plus a markdown table;
a folder that is not a run folder is a one-line error."""

from __future__ import annotations

from shardrec.launch.cli import main
from shardrec.trainer.run_dir import RunDir


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


def test_a_missing_folder_is_one_line(tmp_path, capsys):
    folder = tmp_path / "nope"
    fake_run(tmp_path / "good", 0.7)
    assert main(["report", str(tmp_path / "good"), str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("shardrec: error:") and str(folder) in err[0]


def test_folders_without_metrics_are_skipped_with_a_note(tmp_path, capsys):
    """`shardrec report runs/*/` with the stub of a run that failed before its first step."""
    (tmp_path / "stub").mkdir()
    (tmp_path / "stub" / "config.yaml").write_text("model: {}\n")
    fake_run(tmp_path / "good", 0.7)
    assert main(["report", str(tmp_path / "good"), str(tmp_path / "stub"), "--out", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out
    assert f"skipped {tmp_path / 'stub'}: no metrics.jsonl" in out and "| good |" in out
    assert main(["report", str(tmp_path / "stub")]) == 2  # nothing left to report


def test_final_test_score_is_a_series_apart_from_validation(tmp_path):
    from shardrec.trainer.report import eval_series, final_split, load_run

    fake_run(tmp_path / "run", 0.71)
    rd = RunDir(tmp_path / "run", is_main=True)
    rd.open(fresh=False)
    rd.log({"event": "eval", "split": "test", "step": 40, "auc": 0.69, "logloss": 0.5})
    rd.close()
    run = load_run(tmp_path / "run")
    series = eval_series(run, "auc")
    assert set(series) == {"valid", "test"}
    assert series["test"] == ([40], [0.69]) and len(series["valid"][0]) == 4
    assert final_split(run) == "test"
