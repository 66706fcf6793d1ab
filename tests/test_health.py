"""Fit health: a clean, well-designed sweep passes; an ill-posed one is named as such, with reasons and fixes."""

from __future__ import annotations

import json

import pytest

from lab.fit import approach2, approach3, fit_hparams, load_points
from lab.fit.health import HealthCriteria, Verdict, agreement, combine, fit_health
from tests.conftest import fake_sweep
from tests.test_fit import isoflop_table


@pytest.fixture(scope="module")
def healthy():
    pts = load_points(isoflop_table())  # 5 budgets x 9 sizes around the optimum, 0.2% noise, a known law
    return {"approach2": approach2(pts, bootstrap=200, target_flops=1e21),
            "approach3": approach3(pts, bootstrap=200, target_flops=1e21)}


def test_a_well_designed_sweep_passes(healthy):
    assert Verdict(**healthy["approach3"].diagnostics["health"]).verdict == "ok"
    a = agreement(healthy)
    assert a.verdict == "ok" and a.checks["approaches_N_opt_ratio"] < 1.2


def test_every_fit_carries_its_verdict_in_its_json(healthy):
    j = healthy["approach3"].to_json()
    assert j["diagnostics"]["health"]["verdict"] in ("ok", "weak", "ill-posed")
    assert "N_opt_interval_ratio" in j["diagnostics"]["health"]["checks"]
    json.dumps(j, allow_nan=False)


def test_few_budgets_and_noise_are_ill_posed_with_reasons_and_fixes():
    pts = load_points(isoflop_table(budgets=(1e18, 2e18, 4e18), n_sizes=3, noise=0.03, seed=1))
    v = fit_health(approach3(pts, bootstrap=200, target_flops=1e21))
    assert v.verdict == "ill-posed"
    assert any("N_opt's 95% interval" in r for r in v.reasons)
    assert any("add model sizes around N_opt" in f for f in v.fixes)


def test_criteria_are_the_users_to_change(healthy):
    strict = HealthCriteria(loss_halfwidth_pct=(0.001, 0.002))
    v = fit_health(healthy["approach3"], strict)
    assert v.verdict == "ill-posed" and any("half-width" in r for r in v.reasons)


def test_disagreeing_approaches_are_flagged(healthy):
    import copy

    far = copy.copy(healthy["approach2"])
    far.predictions = {**far.predictions, "N_opt": far.predictions["N_opt"] * 35}  # the demo's 35x
    v = agreement({"approach2": far, "approach3": healthy["approach3"]})
    assert v.verdict == "ill-posed" and "approaches disagree on N_opt" in v.reasons[0]


def test_profiles_without_a_minimum_say_which_sizes_to_add():
    # every size far above the optimum: each profile is a slope, its minimum below the smallest size
    df = isoflop_table(n_sizes=9)
    df = df[df["params"] > df.groupby("flops")["params"].transform("median")]
    with pytest.raises(Exception, match="interior minimum"):
        approach2(load_points(df), bootstrap=0)


def test_combine_takes_the_worst():
    a, b = Verdict(), Verdict()
    b.flag("weak", "x", "do y")
    c = combine([a, b])
    assert c.verdict == "weak" and c.fixes == ["do y"]


def test_hparams_edge_of_grid_is_weak():
    from tests.test_fit_hparams import synthetic_grid
    from lab.fit import load_hparams

    centred = fit_hparams(load_hparams(synthetic_grid(), form="C"), form="C", bootstrap=50)
    assert not [r for r in centred.diagnostics["health"]["reasons"] if "grid edge" in r]
    edge = fit_hparams(load_hparams(synthetic_grid(shift=2.5), form="C"), form="C", bootstrap=0)
    v = Verdict(**edge.diagnostics["health"])
    assert v.verdict == "weak" and sum("grid edge" in r for r in v.reasons) == 4
    assert any("widen the batch x LR grid" in f for f in v.fixes)


def test_recipe_refuses_an_ill_posed_loss_law_unless_forced(tmp_path):
    from lab.recipe import RecipeError
    from lab.recipe.build import build_recipe

    sweep = fake_sweep(tmp_path / "noisy", noise=0.05)  # the demo's pathology: alpha up to ~18, A up to 1e66
    with pytest.raises(RecipeError, match=r"ill-posed at C=1e\+11: .*alpha.*To fix: .*--force"):
        build_recipe([str(sweep)], target_flops=1e11, bootstrap=100)
    r = build_recipe([str(sweep)], target_flops=1e11, bootstrap=100, force=True)
    assert r["laws"]["loss"]["health"]["verdict"] == "ill-posed"
    assert any("health: ill-posed" in n for n in r["notes"])


def test_a_clean_recipe_carries_a_usable_verdict(tmp_path):
    from lab.recipe.build import build_recipe

    r = build_recipe([str(fake_sweep(tmp_path / "s"))], target_flops=1e11, bootstrap=100)
    assert r["laws"]["loss"]["health"]["verdict"] in ("ok", "weak")


@pytest.mark.parametrize("col, values", [("tokenizer", ["byte", "bpe"]), ("seq_len", [256, 512]),
                                         ("mix_a", [0.5, 0.2])])
def test_a_loss_law_refuses_runs_of_mixed_settings(col, values):
    from lab.fit import FitError

    df = isoflop_table()
    df[col] = [values[i % 2] for i in range(len(df))]
    with pytest.raises(FitError, match=f"mix {col}|different mixtures"):
        load_points(df)


def test_hparam_and_mixing_laws_refuse_runs_of_mixed_tokenizers():
    from lab.fit import FitError, load_hparams, load_mixing
    from tests.test_fit_hparams import synthetic_grid
    from tests.test_mixing import synthetic

    df = synthetic_grid()
    df["tokenizer"] = ["byte", "bpe"] * (len(df) // 2) + ["byte"] * (len(df) % 2)
    with pytest.raises(FitError, match="mix tokenizer values .* a batch/LR law"):
        load_hparams(df, form="C")
    mx = synthetic()
    mx["seq_len"] = [256, 512] * (len(mx) // 2) + [256] * (len(mx) % 2)
    with pytest.raises(FitError, match="mix seq_len values .* a mixing law"):
        load_mixing(mx)


def test_a_mixture_optimum_that_wanders_over_bootstrap_draws_is_flagged():
    from lab.fit.health import mixture_optimum_health

    pinned = {"mixture_interval": {"a": [0.30, 0.36], "b": [0.60, 0.68]}}
    assert mixture_optimum_health(pinned).verdict == "ok"
    loose = {"mixture_interval": {"a": [0.02, 0.45], "b": [0.50, 0.70]}}
    v = mixture_optimum_health(loose)
    assert v.verdict == "ill-posed" and "a share" in v.reasons[0] and v.fixes
    assert mixture_optimum_health({"mixture_interval": {"a": [0.2, 0.4]}}).verdict == "weak"
    assert mixture_optimum_health({}).verdict == "ok"  # no bootstrap draws: nothing to judge
