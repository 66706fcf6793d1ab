"""The synthetic study folder (tests/fakestudy.py) loads as a study: its sweeps, recipe and back-tests
are found, the report's fits succeed on it, and its failed and unfinished variants say what is wrong."""

from __future__ import annotations

import json

import pytest
from fakestudy import DOMAINS, HP_LAW, LOSS_BUDGETS, STAGE_FILES, fake_study, true_loss

from lab.report.fits import hparam_fit, loss_fits, mixing_fits
from lab.report.sources import open_source
from lab.results import load_runs
from lab.study.state import STAGES


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return fake_study(tmp_path_factory.mktemp("fake") / "study")


@pytest.fixture(scope="module")
def failed(tmp_path_factory):
    return fake_study(tmp_path_factory.mktemp("fake") / "failed", failed_runs=2)


def test_full_study_opens_with_every_part_and_no_problem(full):
    src = open_source(full)
    assert src.kind == "study" and src.problems == []
    assert set(src.sweeps) == {"hparams", "mixture", "loss"}
    assert [p.split("/")[-1] for ps in src.sweeps.values() for p in ps] == ["a_hparams", "b_mixture", "c_loss"]
    assert src.recipe == full / "recipe.yaml" and set(src.backtests) == {"0", "1"}
    assert [src.stage(n)["status"] for n in STAGES] == ["done"] * len(STAGES)
    cfg = src.study["config"]
    assert cfg["target_flops"] == pytest.approx(10 * max(LOSS_BUDGETS)) and cfg["name"] == "fake" and cfg["seed"] == 0
    assert src.summary["study"] == "fake" and src.summary["backtest"]["covered"] in (True, False)
    assert src.summary["stages"]["hparams"]["runs"] == 75 and src.summary["stages"]["loss"]["failed"] == 0
    # nothing in the copy points into the folder it was built in
    for f in full.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".yaml", ".sbatch"):
            assert "lab-fakestudy-" not in f.read_text(), f


def test_the_fits_of_the_report_succeed_and_find_the_known_laws(full):
    src = open_source(full)
    hp = hparam_fit(src.sweeps["hparams"], bootstrap=0)
    assert hp.ok, hp.error
    assert hp.value.params["B_D_exp"] == pytest.approx(HP_LAW["B_D_exp"], abs=0.05)
    assert hp.value.params["lr_N_exp"] == pytest.approx(HP_LAW["lr_N_exp"], abs=0.1)
    assert not hp.value.diagnostics["edge_warnings"]
    lf = loss_fits(src.sweeps["loss"], src.study["config"]["target_flops"], bootstrap=0)
    for name in ("approach2", "approach3"):
        assert lf.fits[name].ok, lf.fits[name].error
    a3 = lf.fits["approach3"].value.params
    assert a3["alpha"] == pytest.approx(0.45, abs=0.1) and a3["beta"] == pytest.approx(0.42, abs=0.1)
    mf = mixing_fits(src.sweeps["mixture"], src.stage("mixture")["target"], bootstrap=0)
    assert not mf.errors and {"law", "regression"} <= set(mf.models), mf.errors
    assert mf.how.startswith("nested") and len(mf.data) == 27 and mf.data.domains == DOMAINS
    assert mf.optimum is not None and mf.data.natural is not None


def test_the_loss_ladder_has_wsd_branches_and_interior_minima(full):
    import numpy as np

    runs = load_runs(full / "c_loss")
    assert runs["cooldown"].any() and (runs["schedule"] == "wsd").all() and runs["train.seed"].nunique() == 2
    ok = runs[runs["status"] == "completed"]
    for C in LOSS_BUDGETS:
        prof = ok[np.isclose(ok["flops"], C, rtol=0.03)].groupby("params")["loss_val"].mean()
        assert 5 <= len(prof) <= 8, (C, len(prof))
        assert 0 < int(np.argmin(prof.to_numpy())) < len(prof) - 1, (C, prof)


def test_recipe_runs_and_back_tests_are_the_real_codes(full):
    from lab.backtest import backtest_run, compare
    from lab.recipe import load_recipe
    from lab.recipe.format import recipe_sha256

    src = open_source(full)
    recipe = load_recipe(src.recipe)
    st = src.stage("backtest")
    for seed, run in src.stage("full")["runs"].items():
        res = json.loads((full / "e_full" / f"seed{seed}" / "result.json").read_text())
        assert res["status"] == "completed" and res["recipe_sha256"] == recipe_sha256(src.recipe)
        assert res["params"] == recipe.counts["params"] and set(res["loss_val_domains"]) == set(DOMAINS)
        assert res["loss_val"] == pytest.approx(true_loss(res["params"], res["tokens"], res["mixture"]), rel=0.01)
        assert src.backtests[seed] == json.loads(json.dumps(compare(recipe, res)))
        backtest_run(recipe, run, src.recipe)  # the back-test accepts the run as trained from this recipe
    assert abs(st["rel_error_pct"]) < 1.5 and st["floor"]["seeds"] == 2 and set(st["per_seed"]) == {"0", "1"}
    assert src.stage("recipe")["mixture"] == src.stage("mixture")["mixture"]


def test_failed_runs_are_recorded_as_lab_train_does_and_reported(failed):
    src = open_source(failed)
    assert src.kind == "study" and len(src.problems) == 1
    assert "c_loss" in src.problems[0] and "2 failed" in src.problems[0]
    runs = load_runs(*src.sweeps["loss"])
    bad = runs[runs["status"] == "failed"]
    assert len(bad) == 2 and bad["error"].str.contains("synthetic failure").all()
    rec = json.loads((failed / "c_loss" / bad["run"].iloc[0] / "result.json").read_text())
    assert {"status", "error", "traceback", "config", "lab_version", "wall_s"} <= set(rec)
    # the study went on: its recipe is fitted to the completed runs
    assert src.summary["stages"]["loss"]["failed"] == 2 and src.recipe is not None and len(src.backtests) == 2
    assert src.stage("recipe")["law"]["holdout"] is not None


@pytest.mark.parametrize("kwargs, missing", [
    ({"partial": True}, ["stage recipe: not run: no recipe", "stage full/backtest: not run: no back-test"]),
    ({"stages_done": "ab", "failed_stage": "c"},
     ["stage loss: failed (RuntimeError: synthetic failure of stage c (loss) (fake_study)): no sweep to show",
      "stage recipe: not run: no recipe", "stage full/backtest: not run: no back-test"]),
    ({"stages_done": ["hparams", "mixture", "loss", "recipe", "full"]},
     []),
])
def test_unfinished_studies_list_what_is_missing(tmp_path, full, kwargs, missing):
    path = fake_study(tmp_path / "s", **kwargs)
    src = open_source(path)
    assert src.kind == "study" and src.problems == missing
    done = [n for n in STAGES if src.stage(n).get("status") == "done"]
    for name in STAGES:
        for f in STAGE_FILES[name]:
            assert (path / f).exists() == (name in done), (name, f)
    if "recipe" not in done:
        assert src.recipe is None and not src.backtests and src.summary is None


def test_bad_arguments_are_refused(tmp_path, full):
    with pytest.raises(ValueError, match="prefix"):
        fake_study(tmp_path / "a", stages_done=["hparams", "loss"])
    with pytest.raises(ValueError, match="failed_stage"):
        fake_study(tmp_path / "b", partial=True, failed_stage="full")
    with pytest.raises(ValueError, match="already holds a study"):
        fake_study(full)
