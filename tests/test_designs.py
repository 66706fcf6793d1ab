"""Design generators: budgets honoured within half a batch, sizes spread as asked, clear errors."""

import math

import pytest

from lab.counting import counts, flops_per_token, shape_for_params
from lab.designs import (
    ShapeRule,
    batch_lr,
    design_mixtures,
    dirichlet_mixtures,
    isoflop,
    kaplan,
    log_spread,
    mixtures,
    plan_table,
    prior_optimal_params,
)


def test_shape_for_params_lands_near_target():
    for target in (3e4, 1e5, 1e6, 1e7, 2.5e7):
        s = shape_for_params(target, vocab_size=256, seq_len=256, head_dim=16)
        assert abs(math.log(counts(s)["params"] / target)) < 0.25


def test_isoflop_budgets_and_spread():
    specs = isoflop([1e11, 1e12, 1e13], n_sizes=5, spread=4.0, batch_tokens=2048)
    for s in specs:
        C = s.tags["budget"]
        fpt = s.flops / s.tokens
        assert abs(s.flops - C) <= 0.5 * s.batch_tokens * fpt + 1e-6  # within half a batch of tokens
        assert s.overrides["train.flops"] == C
    big = [s for s in specs if s.tags["budget"] == 1e13]
    ns = sorted(s.params for s in big)
    assert len(big) == 5 and ns[-1] / ns[0] > 8  # spread 1/4x .. 4x (16x nominal, shapes round)
    center = prior_optimal_params(1e13, ShapeRule())
    assert ns[0] < center < ns[-1]


def test_prior_is_twenty_tokens_per_param():
    rule = ShapeRule()
    n = prior_optimal_params(1e14, rule)
    s = rule.shape(n)
    d = 1e14 / flops_per_token(s)
    assert 10 < d / counts(s)["params"] < 40


def test_log_spread():
    assert log_spread(100.0, 3, 4.0) == pytest.approx([25.0, 100.0, 400.0])
    assert log_spread(7.0, 1, 4.0) == [7.0]


def test_kaplan_and_batch_lr_grids():
    k = kaplan([3e4, 1e5], [1e5, 1e6, 1e7], batch_tokens=1024)
    assert len(k) == 6 and {s.tokens for s in k} == {1024.0 * round(d / 1024) for d in (1e5, 1e6, 1e7)}
    g = batch_lr([1e12, 1e13], [1024, 2048, 4096], [1e-3, 3e-3])
    assert len(g) == 12 and {s.batch_tokens for s in g} == {1024, 2048, 4096}
    with pytest.raises(ValueError, match="two batch sizes"):
        batch_lr([1e12], [1024], [1e-3, 3e-3])
    with pytest.raises(ValueError, match="multiple of seq_len"):
        batch_lr([1e12], [1000, 2048], [1e-3, 3e-3])


def test_mixtures_are_seeded_and_on_the_simplex():
    a = dirichlet_mixtures(["x", "y", "z"], 20, seed=3)
    assert a == dirichlet_mixtures(["x", "y", "z"], 20, seed=3) != dirichlet_mixtures(["x", "y", "z"], 20, seed=4)
    for m in a:
        assert min(m.values()) >= 0 and sum(m.values()) == pytest.approx(1.0, abs=1e-9)
    specs = mixtures(["x", "y"], 4, [3e4, 1e5])
    assert len(specs) == 8 and specs[0].overrides["data.mixture"] == specs[4].overrides["data.mixture"]


def test_axial_mixtures_are_the_same_for_every_seed_and_move_each_domain_both_ways():
    doms = ["a", "b", "c", "d"]
    ax = design_mixtures(doms, 9, "axial", seed=0)
    assert ax == design_mixtures(doms, 9, "axial", seed=5) and len(ax) == 1 + 2 * len(doms)
    for m in ax:
        assert sum(m.values()) == pytest.approx(1.0, abs=1e-9) and min(m.values()) > 0
    assert ax[0] == pytest.approx({d: 0.25 for d in doms}, abs=1e-3)
    for i, d in enumerate(doms):  # point 1+i raises domain i, point 1+M+i lowers it, the rest equal
        up, down = ax[1 + i], ax[1 + len(doms) + i]
        assert up[d] == pytest.approx(0.45, abs=1e-3) and down[d] == pytest.approx(0.02, abs=1e-3)
        assert len({round(v, 4) for k, v in up.items() if k != d}) == 1
    extra = design_mixtures(doms, 11, "axial", seed=0)
    assert extra[:9] == ax and extra[9:] == dirichlet_mixtures(doms, 2, seed=0)
    with pytest.raises(ValueError, match="n_mixtures >= 9"):
        design_mixtures(doms, 8, "axial")
    with pytest.raises(ValueError, match="design.mixtures"):
        design_mixtures(doms, 8, "sobol")


def test_budget_too_small_for_one_batch_is_an_error():
    with pytest.raises(ValueError, match="less than half a batch"):
        isoflop([1e8], n_sizes=3, batch_tokens=8192)
    with pytest.raises(ValueError, match="empty"):
        isoflop([])


def test_plan_table_lists_every_run_and_the_total():
    specs = isoflop([1e11, 3e11], n_sizes=3)
    table = plan_table(specs, flops_per_s=5e10)
    assert len(table.splitlines()) == len(specs) + 2
    assert f"{sum(s.flops for s in specs):.3g}" in table and "min of training at" in table
