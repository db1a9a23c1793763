"""Nothing silently wrong: each case the integrity issue measured, through the CLI.

Every test asserts the exit code, that the message names the file / row / column or the
config key, and that nothing was left half-written (no run folder, an unchanged config.yaml,
intact checkpoints).
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from corruption import copy_dataset, flip_bytes, set_value, split_files
from shardrec.configs.errors import UserError
from shardrec.configs.tree import ModelConfig
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature
from shardrec.launch.cli import main
from shardrec.trainer.checkpoint import INFO_FILE, check_fingerprint, fingerprint, list_checkpoints
from shardrec.trainer.run_dir import RunDir

FAST = ["--train.max_steps=6", "--eval.max_batches=1", "--train.log_every=1"]


def shardrec(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(list(args))
    return rc, capsys.readouterr().err


def train(capsys, data, run_dir, *extra: str) -> tuple[int, str]:
    return shardrec(capsys, "train", "--config", "tiny", f"--dataset.path={data}", "--run-dir", str(run_dir),
                    *FAST, *extra)


@pytest.fixture
def data_copy(tiny_data, tmp_path):
    return copy_dataset(tiny_data, tmp_path / "data")


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A finished run with checkpoints step_3 and step_6 (copy it before changing it)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    rc = main(["train", "--config", "tiny", f"--dataset.path={tiny_data}", "--run-dir", str(run_dir), *FAST,
               "--checkpoint.every_steps=3"])
    assert rc == 0
    return run_dir


@pytest.fixture
def run_copy(trained, tmp_path):
    return copy_dataset(trained, tmp_path / "run")  # a run folder copies like a data set


def assert_stopped_with_nothing_saved(run_dir: Path, message: str) -> None:
    """A run that met bad data mid-way: no checkpoint, no summary, and its metrics.jsonl
    ends with the error (the config and the steps before it stay as the record)."""
    assert not (run_dir / "summary.json").exists()
    assert list_checkpoints(run_dir / "checkpoints") == []
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "error" and message in last["message"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "tfevents" not in p.name and p.name != ".lock"}


# --- bad data -------------------------------------------------------------------------

@pytest.mark.parametrize("plan", ["default", "data_parallel"])
@pytest.mark.parametrize("value, shown", [(10**6, "id 1000000"), (-1, "id -1"), (None, "null id")])
def test_bad_sparse_id_stops_the_run_whatever_the_plan(capsys, data_copy, tmp_path, plan, value, shown):
    path = split_files(data_copy)[0]
    group, row = set_value(path, "C7", 300, value)
    extra = ["--embeddings.sharding_types=data_parallel"] if plan == "data_parallel" else []
    rc, err = train(capsys, data_copy, tmp_path / "run", *extra)
    assert rc == 2
    assert f"{path}, row group {group}, row {row}: sparse column 'C7'" in err and shown in err
    assert_stopped_with_nothing_saved(tmp_path / "run", "sparse column 'C7'")


def test_nan_dense_value_stops_the_run_and_zero_mode_trains(capsys, data_copy, tmp_path):
    path = split_files(data_copy)[0]
    group, row = set_value(path, "I1", 100, float("nan"))
    rc, err = train(capsys, data_copy, tmp_path / "run")
    assert rc == 2 and f"{path}, row group {group}, row {row}: dense column 'I1' has nan" in err
    assert_stopped_with_nothing_saved(tmp_path / "run", "dense column 'I1'")
    rc, _ = train(capsys, data_copy, tmp_path / "run", "--dataset.on_bad_dense=zero")
    assert rc == 0 and (tmp_path / "run" / "summary.json").is_file()


def test_corrupt_page_stops_the_run_naming_file_and_row_group(capsys, data_copy, tmp_path):
    path = split_files(data_copy, "test")[0]
    flip_bytes(path, __import__("numpy").random.default_rng(1))
    rc, err = train(capsys, data_copy, tmp_path / "run", "--eval.max_batches=0")
    assert rc == 2 and re.search(re.escape(str(path)) + r"( row group \d+: cannot be decoded|: not a readable)", err)
    assert not (tmp_path / "run" / "summary.json").exists()  # the final checkpoint came before


def test_divergence_stops_before_a_diverged_checkpoint(capsys, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    rc, err = train(capsys, tiny_data, run_dir, "--optimizer.lr=1e30", "--checkpoint.every_steps=1",
                    "--checkpoint.keep=1")
    assert rc == 2
    step = int(re.search(r"training diverged at step (\d+): the loss is nan", err).group(1))
    assert "part-00000.parquet row group 0" in err
    kept = list_checkpoints(run_dir / "checkpoints")
    assert [int(p.name.split("_")[1]) for p in kept] == [step - 1]  # the newest finite one survives
    assert not (run_dir / "summary.json").exists()


# --- checkpoints that do not fit -------------------------------------------------------

def test_eval_with_another_model_or_flavor_is_refused(capsys, trained):
    rc, err = shardrec(capsys, "eval", "--run-dir", str(trained), "--model.name=deepfm")
    assert rc == 2 and "model.name (checkpoint: 'dlrm', now: 'deepfm')" in err
    rc, err = shardrec(capsys, "eval", "--run-dir", str(trained), "--model.flavor=small")
    assert rc == 2 and "model.flavor (checkpoint: 'debug', now: 'small')" in err
    # The wide terms and the row width shape the weights too.
    rc, err = shardrec(capsys, "eval", "--run-dir", str(trained), "--model.first_order=true",
                       "--model.cross_pairs=C1:C2", "--model.embedding_dim=4")
    assert rc == 2 and "model.first_order (checkpoint: False, now: True)" in err
    assert "model.cross_pairs (checkpoint: None, now: ['C1:C2'])" in err
    assert "model.embedding_dim (checkpoint: 0, now: 4)" in err


def test_checkpoints_from_before_a_fingerprint_key_still_load(capsys, run_copy):
    for ckpt in list_checkpoints(run_copy / "checkpoints"):
        info = json.loads((ckpt / INFO_FILE).read_text())
        for key in ("model.first_order", "model.embedding_dim"):
            del info["fingerprint"][key]
        (ckpt / INFO_FILE).write_text(json.dumps(info))
    rc, err = shardrec(capsys, "eval", "--run-dir", str(run_copy))
    assert rc == 0, err


def test_a_checkpoint_of_an_earlier_model_revision_is_refused():
    # din's weights from before its FM term have the same keys and shapes: only the revision
    # in the fingerprint tells them apart.
    schema = DatasetSchema(label="label", dense=["d"], sparse=[SparseFeature("item_id", 10)])
    now = fingerprint(ModelConfig(name="din"), schema)
    saved = {k: v for k, v in now.items() if k != "model.revision"}
    with pytest.raises(UserError, match=r"the model's revision \(checkpoint: 1, now: 2: model 'din' computes"):
        check_fingerprint(Path("ckpt"), {"fingerprint": saved}, now)
    check_fingerprint(Path("ckpt"), {"fingerprint": dict(now)}, now)
    # Models that never changed keep matching checkpoints written before the key existed.
    assert "model.revision" not in fingerprint(ModelConfig(name="deepfm"), schema)


def test_eval_on_another_data_set_is_refused(capsys, trained, data_copy):
    schema = json.loads((data_copy / "schema.json").read_text())
    schema["sparse"][2]["num_embeddings"] += 10
    (data_copy / "schema.json").write_text(json.dumps(schema))
    rc, err = shardrec(capsys, "eval", "--run-dir", str(trained), f"--dataset.path={data_copy}")
    assert rc == 2 and "table sizes / multi-hot differ: C3 2000 -> 2010" in err


def test_resume_with_another_model_is_refused_and_leaves_the_folder_alone(capsys, tiny_data, run_copy):
    before = snapshot(run_copy)
    rc, err = train(capsys, tiny_data, run_copy, "--checkpoint.resume=latest", "--model.name=dcn")
    assert rc == 2 and "model.name (checkpoint: 'dlrm', now: 'dcn')" in err
    assert snapshot(run_copy) == before  # config.yaml included


def test_resume_with_another_batch_size_is_refused(capsys, tiny_data, run_copy):
    before = snapshot(run_copy)
    rc, err = train(capsys, tiny_data, run_copy, "--checkpoint.resume=latest", "--train.batch_size=128")
    assert rc == 2 and "config key 'train.batch_size'" in err and "global batch of 256 rows" in err
    assert snapshot(run_copy) == before


def test_mismatched_keys_are_listed(capsys, tiny_data, run_copy):
    """Another embedding optimizer: same model, other optimizer state (strict key check)."""
    rc, err = train(capsys, tiny_data, run_copy, "--checkpoint.resume=latest", "--embeddings.optimizer=adagrad")
    assert rc == 2 and "does not match this model and optimizer; keys of another shape: optim.state." in err
    assert "t_C1.momentum1 (checkpoint (1460,), model (1460, 8))" in err  # row-wise vs per-element state


class _WritesMarker:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_crafted_metadata_is_refused_and_runs_nothing(capsys, run_copy, tmp_path):
    marker = tmp_path / "marker"
    latest = list_checkpoints(run_copy / "checkpoints")[-1]
    (latest / ".metadata").write_bytes(pickle.dumps(_WritesMarker(marker)))
    rc, err = shardrec(capsys, "eval", "--run-dir", str(run_copy))
    assert rc == 2 and "refers to 'builtins.exec'" in err and "refusing to load it" in err
    assert not marker.exists()


def test_crafted_non_tensor_entry_is_refused_and_runs_nothing(tmp_path):
    """DCP stores non-tensor entries with torch.save; shardrec reads them weights_only."""
    import torch.distributed.checkpoint as dcp
    from shardrec.configs.errors import UserError
    from shardrec.trainer.safe_dcp import safe_load

    marker = tmp_path / "marker"
    dcp.save({"x": _WritesMarker(marker), "n": 3}, checkpoint_id=str(tmp_path / "ckpt"), no_dist=True)
    with pytest.raises(UserError, match="'x' holds an object shardrec does not load.*GLOBAL exec"):
        safe_load({"x": 0, "n": 0}, str(tmp_path / "ckpt"), no_dist=True)
    assert not marker.exists()
    state = {"n": 0}
    safe_load(state, str(tmp_path / "ckpt"), no_dist=True)  # plain values still load
    assert state == {"n": 3}


# --- run folders and checkpoint folders ---------------------------------------------------

def test_fresh_run_into_a_finished_run_is_refused_unless_overwrite(capsys, tiny_data, run_copy):
    before = snapshot(run_copy)
    rc, err = train(capsys, tiny_data, run_copy)
    assert rc == 2 and "already holds a run" in err and "--overwrite" in err and str(run_copy) in err
    assert snapshot(run_copy) == before
    rc, _ = train(capsys, tiny_data, run_copy, "--overwrite", "--train.max_steps=4")
    assert rc == 0
    assert [p.name for p in list_checkpoints(run_copy / "checkpoints")] == ["step_4"]
    assert json.loads((run_copy / "summary.json").read_text())["steps"] == 4
    steps = [json.loads(line)["step"] for line in (run_copy / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # the old run's records are gone, not interleaved


def test_second_run_on_a_locked_folder_is_refused_naming_the_holder(capsys, tiny_data, tmp_path):
    holder = RunDir(tmp_path / "run", is_main=True)
    holder.open(fresh=True)
    try:
        rc, err = train(capsys, tiny_data, tmp_path / "run")
    finally:
        holder.close()
    assert rc == 2 and f"in use by another shardrec run (pid {os.getpid()})" in err
    assert not (tmp_path / "run" / "config.yaml").exists()
    rc, _ = train(capsys, tiny_data, tmp_path / "run")  # released: the folder is usable again
    assert rc == 0


def test_incomplete_and_orphaned_checkpoints(capsys, tiny_data, run_copy, caplog):
    ckpts = run_copy / "checkpoints"
    (ckpts / "step_9").mkdir()  # an interrupted save: no .metadata
    (ckpts / ".step_7.tmp").mkdir()
    (ckpts / ".step_6.old").mkdir()
    assert [p.name for p in list_checkpoints(ckpts)] == ["step_3", "step_6"]
    assert "skipping incomplete checkpoint" in caplog.text and "step_9" in caplog.text
    rc, _ = shardrec(capsys, "eval", "--run-dir", str(run_copy))
    assert rc == 0
    # Resume re-saves step_6 (max_steps 6 is reached at once): no gap, no leftovers.
    rc, _ = train(capsys, tiny_data, run_copy, "--checkpoint.resume=latest")
    assert rc == 0
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_3", "step_6", "step_9"]
    info = json.loads((ckpts / "step_6" / INFO_FILE).read_text())
    assert info["step"] == 6 and info["fingerprint"]["model.name"] == "dlrm"


def test_checkpoint_without_its_description_is_not_loaded(capsys, run_copy):
    latest = list_checkpoints(run_copy / "checkpoints")[-1]
    (latest / INFO_FILE).unlink()
    rc, err = shardrec(capsys, "eval", "--run-dir", str(run_copy), "--checkpoint", str(latest))
    assert rc == 2 and "not a complete shardrec checkpoint" in err


# --- config values ---------------------------------------------------------------------

@pytest.mark.parametrize("override, words", [
    ("--train.epochs=0", "'train.epochs' must be > 0, got 0"),
    ("--train.epochs=-3", "'train.epochs' must be > 0, got -3"),
    ("--train.max_steps=-5", "'train.max_steps' must be >= 0"),
    ("--optimizer.lr=-1", "'optimizer.lr' must be > 0"),
    ("--embeddings.lr=nan", "'embeddings.lr' must be a finite number"),
    ("--checkpoint.keep=-1", "'checkpoint.keep' must be >= 0"),
    ("--eval.batch_size=0", "'eval.batch_size' must be > 0"),
])
def test_out_of_range_config_values_name_the_key(capsys, tiny_data, tmp_path, override, words):
    rc, err = train(capsys, tiny_data, tmp_path / "run", override)
    assert rc == 2 and words in err
    assert not (tmp_path / "run").exists()


def test_empty_config_file_is_an_error(capsys, tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("\n")
    rc, err = shardrec(capsys, "train", "--config", str(empty))
    assert rc == 2 and f"config file '{empty}' is empty" in err


# --- converters ------------------------------------------------------------------------

def test_truncated_gzip_input_names_the_file(capsys, tmp_path):
    line = "1\t" + "\t".join(["3"] * 13) + "\t" + "\t".join(["68fd1e64"] * 26) + "\n"
    data = gzip.compress((line * 5000).encode())
    src = tmp_path / "day_0.gz"
    src.write_bytes(data[: len(data) // 2])
    rc, err = shardrec(capsys, "convert", "criteo", "--input", str(src), "--out", str(tmp_path / "out"),
                       "--workers", "1")
    assert rc == 2 and f"{src}: truncated or corrupt gzip input" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_fbgemm_refuses_out_of_range_ids_as_second_line(tiny_data):
    """Batches that bypass the reader still cannot be clamped silently (bounds check FATAL)."""
    from shardrec.configs.loader import load_config
    from shardrec.data_pipeline.reader import ShardReader
    from shardrec.data_pipeline.schema import load_schema
    from shardrec.trainer.distributed import init_distributed, shutdown
    from shardrec.trainer.loop import build_sharded_task

    env = init_distributed()
    try:
        schema = load_schema(tiny_data)
        model, _ = build_sharded_task(schema, load_config("tiny", [f"--dataset.path={tiny_data}"]), env)
        batch = next(iter(ShardReader(tiny_data, "train", schema, 8, prefetch_batches=0)))
        batch.sparse_features.values()[3] = 10**6
        with pytest.raises(RuntimeError, match="idx < num_rows"):
            model(batch)
        del model
    finally:
        shutdown(env)
    assert torch.get_num_threads() >= 1
