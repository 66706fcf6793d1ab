"""The staged study: its designs (WSD runs serving several budgets), its record, its input checks and
the arithmetic of its stages. The end-to-end study on the fixture corpus is marked slow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from lab.counting import flops_per_token
from lab.designs import ShapeRule, batch_lr_point, isoflop_wsd_point, prior_optimal_params, served_budgets
from lab.study import QUICK, StudyConfig
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


def _cell(C, best_B, best_lr, edge):
    return {"C": C, "best_B": best_B, "best_lr": best_lr, "edge": edge}


class _Res:
    def __init__(self, cells):
        self.diagnostics = {"cells": cells}


def test_widening_steps_past_the_edge_the_best_runs_sit_on():
    res = _Res([_cell(1e10, 512, 1.2e-2, ["batch", "lr"]), _cell(1e11, 2048, 3e-3, ["batch", "lr"])])
    nb, nl = widened(res, [512, 1024, 2048], [3e-3, 6e-3, 1.2e-2], 256)
    assert nb == [256, 4096] and nl == pytest.approx([1.5e-3, 2.4e-2])
    nb, _ = widened(_Res([_cell(1e10, 256, 6e-3, ["batch"])]), [256, 512], [3e-3, 6e-3, 1.2e-2], 256)
    assert nb == []  # one sequence is the smallest batch: flagged, not widened
    assert widened(_Res([_cell(1e10, 1024, 6e-3, [])]), [512, 1024, 2048], [3e-3, 6e-3, 1.2e-2], 256) == ([], [])


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
        assert len(cfg.hparams.budgets) * (1 + len(cfg.hparams.branch_fracs)) >= 2  # form C needs 2+ cells
        assert math.isclose(sum(1 for _ in cfg.common_overrides()), len(set(o.split("=")[0] for o in cfg.common_overrides())))
