"""Shared fixtures: one small synthetic data set per test session, and a tiny config."""

from __future__ import annotations

import warnings

import pytest
from shardrec.configs.loader import load_config
from shardrec.data_pipeline.synth import generate, spec_from_preset

warnings.filterwarnings("ignore")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """30k rows of the `tiny` preset (24k train / 3k valid / 3k test), several files."""
    out = tmp_path_factory.mktemp("data") / "tiny"
    generate(spec_from_preset("tiny", 30_000, seed=3), out)
    return str(out)


@pytest.fixture
def tiny_cfg(tiny_data, tmp_path):
    """The tiny preset pointed at the session's data and a fresh run folder."""
    return load_config("tiny", [f"--dataset.path={tiny_data}", f"--run_dir={tmp_path / 'run'}"])
