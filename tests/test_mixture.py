"""Mixture validation and the sampler: proportions honoured, batches reproducible per step."""

import numpy as np
import pytest

from lab.data.mixture import MixtureSampler, resolve_mixture, systematic_counts, validation_set
from lab.data.shards import ensure_shards
from lab.data.tokenizer import ByteTokenizer

DOMAINS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def shards(synthetic_corpus):
    return ensure_shards(synthetic_corpus, ByteTokenizer(), progress=False)


@pytest.mark.parametrize(
    "spec, msg",
    [
        ({"a": 0.5, "b": 0.6}, "sum to 1"),
        ({"a": 1.2, "b": -0.2}, r"data\.mixture\.b"),
        ({"a": 0.5, "zz": 0.5}, "unknown domain"),
        ("mostly-a", "not 'natural'"),
        ({"a": "x", "b": 1.0}, "must be a number"),
        ({"a": float("nan"), "b": 1.0}, "finite"),
    ],
)
def test_bad_mixtures_name_the_problem(spec, msg):
    with pytest.raises(ValueError, match=msg):
        resolve_mixture(spec, DOMAINS, {"a": 1, "b": 1, "c": 2})


def test_presets():
    assert resolve_mixture("uniform", DOMAINS) == pytest.approx({d: 1 / 3 for d in DOMAINS})
    assert resolve_mixture("natural", DOMAINS, {"a": 1, "b": 1, "c": 2}) == pytest.approx({"a": 0.25, "b": 0.25, "c": 0.5})
    assert resolve_mixture({"a": 1.0}, DOMAINS) == {"a": 1.0, "b": 0.0, "c": 0.0}


def test_systematic_counts_are_within_one_of_target():
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.dirichlet(np.ones(5))
        n = int(rng.integers(1, 64))
        c = systematic_counts(p, n, rng.random())
        assert c.sum() == n and np.all(np.abs(c - p * n) < 1 + 1e-9)


def test_sampler_honours_proportions_and_is_reproducible(shards):
    mix = {"a": 0.6, "b": 0.3, "c": 0.1}
    names = shards.names
    s = MixtureSampler(shards, mix, seq_len=32, seed=1)
    seen = np.zeros(3)
    for step in range(50):
        x, y, dom = s.batch(step, 20)
        assert x.shape == (20, 32) and y.shape == (20, 32)
        assert np.array_equal(x[:, 1:].numpy(), y[:, :-1].numpy())
        np.add.at(seen, dom, 1)
        counts = np.bincount(dom, minlength=3)
        target = np.array([mix[d] for d in s.domains]) * 20
        assert np.all(np.abs(counts - target) < 1 + 1e-9)
    assert seen / seen.sum() == pytest.approx([mix[d] for d in names], abs=1e-9)
    x1, _, _ = s.batch(7, 20)
    x2, _, _ = MixtureSampler(shards, mix, seq_len=32, seed=1).batch(7, 20)
    assert np.array_equal(x1.numpy(), x2.numpy())
    x3, _, _ = MixtureSampler(shards, mix, seq_len=32, seed=2).batch(7, 20)
    assert not np.array_equal(x1.numpy(), x3.numpy())


def test_rows_come_from_their_domain(shards):
    s = MixtureSampler(shards, {"a": 0.5, "c": 0.5}, seq_len=16, seed=0)
    x, _, dom = s.batch(0, 8)
    for row, j in zip(x.numpy(), dom):
        data = np.asarray(shards.domains[s.domains[j]].train)
        # the row is a contiguous window of that domain's shard
        hits = np.where(data[: len(data) - 16] == row[0])[0]
        assert any(np.array_equal(data[h : h + 16], row) for h in hits)


def test_validation_set_is_fixed(shards):
    v = validation_set(shards, "a", 16, 1024)
    assert v.shape[1] == 17 and len(v) <= 1024 // 16
    assert np.array_equal(v.numpy(), validation_set(shards, "a", 16, 1024).numpy())
