"""Config loading: presets, dotted overrides, and errors that name the key."""

from __future__ import annotations

import pytest
from shardrec.configs.errors import UserError
from shardrec.configs.loader import dump_yaml, load_config, preset_names


def test_presets_load_with_their_values():
    assert {"demo", "tiny"} <= set(preset_names())
    cfg = load_config("tiny")
    assert cfg.model.flavor == "debug"
    assert cfg.train.batch_size == 256


def test_overrides_are_typed_and_nested():
    cfg = load_config("tiny", ["--train.batch_size=4096", "--embeddings.lr=1", "--dataset.path=123",
                               "--embeddings.sharding_types=table_wise,row_wise", "--train.progress=false"])
    assert cfg.train.batch_size == 4096
    assert cfg.embeddings.lr == 1.0 and isinstance(cfg.embeddings.lr, float)
    assert cfg.dataset.path == "123"  # a str field keeps the text as typed
    assert cfg.embeddings.sharding_types == ["table_wise", "row_wise"]
    assert cfg.train.progress is False


def test_dumped_config_loads_back_equal(tmp_path):
    cfg = load_config("demo", ["--train.epochs=3"])
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(str(path)) == cfg


@pytest.mark.parametrize("override, words", [
    ("--train.batchsize=1", ["'train.batchsize'", "did you mean 'train.batch_size'"]),
    ("--trian.epochs=1", ["'trian'", "did you mean 'train'"]),
    ("--train.batch_size=big", ["'train.batch_size'", "must be int", "'big'"]),
    ("--train.batch_size=true", ["'train.batch_size'", "must be int"]),
    ("--embeddings.optimizer=adam2", ["'embeddings.optimizer'", "one of", "rowwise_adagrad", "'adam2'"]),
    ("--train=3", ["'train'", "is a section"]),
    ("--train.epochs", ["--train.epochs", "--section.key=value"]),
])
def test_bad_overrides_name_the_key(override, words):
    with pytest.raises(UserError) as err:
        load_config("tiny", [override])
    for w in words:
        assert w in str(err.value)


def test_bad_yaml_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_size: [1, 2\n")
    with pytest.raises(UserError, match="bad.yaml.*not valid YAML"):
        load_config(str(bad))
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        load_config(str(listing))


def test_missing_config_lists_presets():
    with pytest.raises(UserError, match="'nope.yaml' not found.*demo.*tiny"):
        load_config("nope.yaml")
