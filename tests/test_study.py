"""The staged study: its designs (WSD runs serving several budgets), its record, its input checks and
the arithmetic of its stages. The end-to-end study on the fixture corpus is marked slow."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from lab.counting import flops_per_token
from lab.designs import ShapeRule, batch_lr_point, isoflop_wsd_point, prior_optimal_params, served_budgets
from lab.study import QUICK, HparamStage, LossStage, MixtureStage, StudyConfig
from lab.study.__main__ import main, parse_stages
from lab.study.inputs import check_inputs, parse_mixture
from lab.study.launch import StageInputError, sweep_command
from lab.study.stages import floor, seed_spread, widened
from lab.study.state import StudyState

from conftest import fake_sweep

RULE = ShapeRule()
BUDGETS = [1.25e11, 2.5e11, 5e11, 1e12]


def test_isoflop_wsd_run_serves_every_budget_its_size_belongs_to():
    sizes = [4e3, 1.3e4, 2.7e4, 1.1e5]
    for k in range(len(sizes)):
        spec = isoflop_wsd_point(sizes, k, BUDGETS, 4.0, 1024, 3e-3, RULE, 120.0)
        served = served_budgets(spec.params, BUDGETS, 4.0, RULE, 120.0)
        assert served, "every size of this ladder lies in some window"
        fpt = flops_per_token(RULE.shape(sizes[k]))
        assert abs(spec.flops / served[-1] - 1) < 0.01  # the main run ends at the largest budget
        assert len(spec.cooldowns) == len(served) - 1
        for C, d in zip(served[:-1], spec.cooldowns):  # each branch ends at its budget's D
            assert abs(d * fpt / C - 1) < 0.01
        for C in served:  # a size belongs to C when it lies within the spread of the prior optimum
            assert 1 / 4 <= spec.params / prior_optimal_params(C, RULE, 120.0) <= 4
    assert isoflop_wsd_point([1e9], 0, BUDGETS, 4.0, 1024, 3e-3, RULE, 120.0) is None


def test_batch_lr_branches_end_at_fractions_of_the_budget():
    spec = batch_lr_point(3e11, 1024, 3e-3, RULE, 120.0, branch_fracs=(1 / 9, 1 / 3))
    assert [round(d / spec.tokens, 2) for d in spec.cooldowns] == [0.11, 0.33]
    assert spec.overrides["train.cooldowns"] == spec.cooldowns
    with pytest.raises(ValueError, match="branch_fracs"):
        batch_lr_point(3e11, 1024, 3e-3, RULE, 120.0, branch_fracs=(1.5,))


def test_study_sweep_folders_are_named_by_their_axes_only():
    cmd = sweep_command("batch_lr", Path("/x"), ["train.lr=1e-3,3e-3"], ["design.sizes=[1.0,2.0]", "data.seq_len=256"])
    excl = next(c for c in cmd if c.startswith("hydra.job.config.override_dirname.exclude_keys="))
    assert "design.sizes" in excl and "data.seq_len" in excl and "train.lr" not in excl


def _cell(N, best_B, best_lr):
    return {"N": N, "C": 6 * N * 1e6, "best_B": best_B, "best_lr": best_lr}


class _Res:
    def __init__(self, cells):
        self.diagnostics = {"cells": cells}


def test_widening_steps_past_the_edge_each_sizes_best_runs_sit_on():
    grid = ([512, 1024], [1.5e-3, 3e-3, 6e-3])
    cells = [_cell(1e4, 512, 6e-3), _cell(1e4, 1024, 6e-3), _cell(1e4, 512, 3e-3),  # top LR edge, 2 of 3
             _cell(1e5, 1024, 1.5e-3), _cell(1e5, 1024, 1.5e-3),  # bottom LR and top batch edge
             _cell(3e4, 512, 3e-3), _cell(3e4, 1024, 6e-3)]  # 1 of 2 at an edge: half, so widened
    plan = widened(_Res(cells), {1e4: grid, 1e5: grid, 3e4: grid, 7e4: grid}, 512)
    assert plan[1e4] == ([], [pytest.approx(1.2e-2)])
    assert plan[1e5] == ([2048], [pytest.approx(7.5e-4)])
    assert plan[3e4] == ([2048], [pytest.approx(1.2e-2)])
    assert 7e4 not in plan  # no cells of that size
    # interior optimum everywhere: nothing to widen; batch never widens below the floor
    assert widened(_Res([_cell(1e4, 512, 3e-3)]), {1e4: grid}, 512) == {}


def test_floor_and_seed_spread():
    assert floor([2.0])["std_pct"] is None
    f = floor([2.0, 2.02])
    assert f["range_pct"] == pytest.approx(100 * 0.02 / 2.01) and f["std_pct"] > 0
    rows = [{"status": "completed", "params": n, "flops": 1e11, "loss_val": L}
            for n, L in ((1e4, 3.0), (1e4, 3.03), (2e4, 2.9), (2e4, 2.9), (4e4, 3.2), (4e4, 3.2))]
    out = seed_spread(pd.DataFrame(rows))
    assert out["points_with_seeds"] == 3
    assert out["profile_depth_pct_median"] == pytest.approx(100 * (3.2 / 2.9 - 1))


def test_stage_names_and_letters():
    assert parse_stages(None)[0] == "hparams" and parse_stages(None)[-1] == "summary"
    assert parse_stages("d,a") == ["hparams", "recipe"]  # always in study order
    assert parse_stages("loss,e") == ["loss", "full"]
    with pytest.raises(ValueError, match="not a stage"):
        parse_stages("z")


def test_state_refuses_a_folder_holding_another_study(tmp_path):
    st = StudyState.open(tmp_path, QUICK.to_json())
    st.record("hparams", status="done", wall_s=1.0)
    again = StudyState.open(tmp_path, QUICK.to_json())
    assert again.done("hparams") and not again.done("mixture")
    with pytest.raises(ValueError, match="other settings.*seed"):
        StudyState.open(tmp_path, QUICK.with_seed(1).to_json())
    more = StudyState.open(tmp_path, replace(QUICK, full_seeds=4).to_json())  # more seeds of the full run: allowed
    assert more.doc["config"]["full_seeds"] == 4 and more.done("hparams")


def test_more_full_seeds_rerun_stage_e_and_what_follows(tmp_path, capsys):
    from lab.study import run as run_mod
    from lab.study.stages import Study

    calls = []
    fake = {n: (lambda s, n=n: calls.append(n) or ({"runs": {"0": "x"}} if n == "full" else {})) for n in run_mod.FUNCS}
    cfg = replace(QUICK, full_seeds=1)
    st = StudyState.open(tmp_path, cfg.to_json())
    for n in ("hparams", "mixture", "loss", "recipe", "backtest"):
        st.record(n, status="done", wall_s=1.0)
    st.record("full", status="done", wall_s=60.0, runs={"0": "x"})
    old = dict(run_mod.FUNCS)
    try:
        run_mod.FUNCS.update(fake)
        run_mod.run_study(Study(cfg, tmp_path, st, {}), parse_stages(None))
        assert calls == ["summary"]                        # everything done: only the summary is rewritten
        more = replace(QUICK, full_seeds=2)
        run_mod.run_study(Study(more, tmp_path, StudyState.open(tmp_path, more.to_json()), {}), parse_stages(None))
        assert calls == ["summary", "full", "backtest", "summary"]
        assert StudyState.open(tmp_path, more.to_json()).stage("full")["wall_s"] >= 60.0  # the cost adds up
    finally:
        run_mod.FUNCS.update(old)
    assert main(["--out", str(tmp_path / "s"), "--full-seeds", "0"]) == 2


def test_inputs_are_checked_before_compute(tmp_path):
    with pytest.raises(StageInputError, match="--loss-sweeps .*not a folder"):
        check_inputs({"loss_sweeps": [str(tmp_path / "nope")]})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StageInputError, match="no runs found"):
        check_inputs({"loss_sweeps": [str(empty)]})
    sw = fake_sweep(tmp_path / "sw")
    for res in list(sw.glob("*/result.json")):
        res.write_text(json.dumps({"status": "failed", "error": "boom"}))
    with pytest.raises(StageInputError, match="no completed run .*15 failed"):
        check_inputs({"loss_sweeps": [str(sw)]})
    few = fake_sweep(tmp_path / "few")
    for res in sorted(few.glob("*/result.json"))[3:]:
        res.write_text(json.dumps({"status": "failed", "error": "boom"}))
    with pytest.raises(StageInputError, match="3 completed run.*at least 6"):
        check_inputs({"loss_sweeps": [str(few)]})
    a, b = fake_sweep(tmp_path / "a", seq_len=64), fake_sweep(tmp_path / "b", seq_len=128)
    with pytest.raises(StageInputError, match="mix seq_len"):
        check_inputs({"loss_sweeps": [str(a), str(b)]})
    with pytest.raises(StageInputError, match="--hparams-law"):
        check_inputs({"hparams_law": str(tmp_path / "missing.json")})
    with pytest.raises(StageInputError, match="summing to 1"):
        parse_mixture('{"a": 0.3}')
    assert parse_mixture("natural") == "natural"


def test_cli_bad_input_exits_2_before_anything_runs(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "s"), "--stages", "q"]) == 2
    assert main(["--out", str(tmp_path / "s"), "--loss-sweeps", str(tmp_path / "none")]) == 2
    assert "not a folder" in capsys.readouterr().err
    # a stage whose input stage never ran, and no input given in its place
    assert main(["--out", str(tmp_path / "s"), "--stages", "recipe"]) == 2
    assert "run that stage first" in capsys.readouterr().err
    assert not (tmp_path / "s" / "recipe.yaml").exists()


def test_presets_fit_the_target_arithmetic():
    for cfg in (StudyConfig(), QUICK):
        assert cfg.target_flops == cfg.target_factor * max(cfg.loss.budgets)
        h = cfg.hparams
        assert len(h.budgets) >= 2 and len(h.sizes) >= 2 and len(h.batches) >= 2  # form ND: N and D vary apart
        assert len(cfg.mixture.sizes) >= 2  # the nested mixing law needs 2+ sizes
        assert math.isclose(sum(1 for _ in cfg.common_overrides()), len(set(o.split("=")[0] for o in cfg.common_overrides())))


TINY = StudyConfig(
    name="tiny", corpus="fixture",
    hparams=HparamStage(sizes=(4e3, 1.3e4), budgets=(4e9, 8e9, 1.6e10), lrs=(3e-3, 6e-3, 1.2e-2), widen_rounds=1),
    mixture=MixtureStage(sizes=(4e3, 1.3e4, 2.7e4), tokens_per_param=10.0),  # axial: 1 + 2 x 4 domains
    loss=LossStage(budgets=(2e10, 4e10, 8e10, 1.6e11), sizes=(4e3, 1.3e4, 2.7e4, 5.5e4), spread=16.0, seeds=1),
    target_factor=2.0, full_seeds=2, bootstrap=50, tokens_per_param=20.0,
)


@pytest.mark.slow
def test_tiny_study_runs_every_stage_and_resumes(tmp_path, fixture_corpus, capsys):
    """All seven stages on the fixture corpus (the loss law of so tiny a grid is forced past its
    verdict), then a relaunch that skips every finished stage and rewrites only the summary."""
    from lab.study.run import run_study
    from lab.study.stages import Study

    out = tmp_path / "study"
    run_study(Study(TINY, out, StudyState.open(out, TINY.to_json()), {}, force=True), parse_stages(None))
    doc = json.loads((out / "study.json").read_text())
    assert all(doc["stages"][s]["status"] == "done" for s in parse_stages(None))
    law = json.loads((out / "a_hparams_law.json").read_text())
    assert {"lr_coef", "lr_N_exp", "lr_D_exp", "B_coef", "B_D_exp", "resolved_health"} <= set(law)
    recipe = doc["stages"]["recipe"]
    assert all(recipe["fitted"].values()), recipe["fitted"]  # loss, batch, LR and mixture all from the study's laws
    mix = doc["stages"]["mixture"]
    assert mix["law"]["chosen"] in ("optimum", "uniform") and "gain over uniform" in mix["law"]["choice"]
    assert "convex hull of the 9" in mix["law"]["search"]  # the axial design over the fixture's 4 domains
    assert recipe["health"]["verdict"] in ("ok", "weak", "ill-posed")
    bt = doc["stages"]["backtest"]
    assert math.isfinite(bt["rel_error_pct"]) and bt["floor"]["seeds"] == 2 and bt["domains"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backtest"]["half_width_pct"] == bt["half_width_pct"]
    assert summary["stages"]["loss"]["runs"] >= 3 and summary["stages"]["hparams"]["flops"] > 0
    capsys.readouterr()
    run_study(Study(TINY, out, StudyState.open(out, TINY.to_json()), {}, force=True), parse_stages(None))
    said = capsys.readouterr().out
    assert said.count("skipped") == 6 and "summary ->" in said


def test_compare_reports_stability_against_the_targets(tmp_path, capsys):
    from lab.study.compare import main as compare_main

    def summary(folder, N, L, err):
        folder.mkdir()
        doc = {"recipe": {"counts": {"params": N}, "prediction": {"loss_val": L}, "mixture": "natural"},
               "backtest": {"rel_error_pct": err, "half_width_pct": 2.0, "covered": True,
                            "rel_error_vs_seed_mean_pct": err, "floor": {"seeds": 2, "std_pct": 0.4}}}
        (folder / "summary.json").write_text(json.dumps(doc))
        return str(folder)

    a, b = summary(tmp_path / "a", 1e5, 2.00, 0.5), summary(tmp_path / "b", 1.6e5, 2.02, -0.3)
    assert compare_main([a, b]) == 0
    said = capsys.readouterr().out
    assert "ratio 1.60" in said and "MISSES" in said and "1.00% apart" in said and "+0.50%" in said
    (tmp_path / "c").mkdir()
    assert compare_main([a, str(tmp_path / "c")]) == 2


def test_a_full_run_from_another_recipe_is_set_aside_not_reused(tmp_path, capsys):
    from lab.recipe.format import recipe_sha256
    from lab.study.stages import Study, _set_aside_if_stale

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("version: 1\n")
    run = tmp_path / "e_full" / "seed0"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"status": "completed", "recipe_sha256": recipe_sha256(recipe)}))
    study = Study(QUICK, tmp_path, StudyState.open(tmp_path, QUICK.to_json()))
    _set_aside_if_stale(study, run, recipe)
    assert run.is_dir()  # trained from this very recipe: kept
    recipe.write_text("version: 2\n")  # stage d rebuilt it
    _set_aside_if_stale(study, run, recipe)
    stale = [p for p in run.parent.iterdir() if p.name.startswith("seed0.stale-")]
    assert not run.exists() and len(stale) == 1 and (stale[0] / "result.json").exists()
    assert "another recipe" in capsys.readouterr().out
