"""Batch-size and LR laws: synthetic recovery, edge detection, bad input, Step Law reference checks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lab.fit.__main__ import main as fit_main
from lab.fit.engine.errors import FitError
from lab.fit.hparams import fit_hparams, grid_gap, load_hparams, predict_hparams
from lab.paths import reference_dir

TRUE = {"B_coef": 0.3, "B_C_exp": 0.33, "lr_coef": 20.0, "lr_C_exp": -0.125}


def synthetic_grid(budgets=(1e17, 1e18, 1e19, 1e20), noise=0.0005, seed=0, shift=0.0) -> pd.DataFrame:
    """Loss bowls in (ln B, ln lr) around the true optima; ``shift`` moves the optimum off-grid."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in budgets:
        b_opt, lr_opt = predict_hparams(TRUE, "C", C=C)
        for fb in 2.0 ** np.arange(-3, 4):
            for fl in 2.0 ** np.arange(-3, 4, 0.5):
                B, lr = b_opt * fb * np.exp(shift), lr_opt * fl * np.exp(shift)
                L = 2.0 * (1 + 0.004 * np.log(B / b_opt) ** 2 + 0.006 * np.log(lr / lr_opt) ** 2) * np.exp(rng.normal(0, noise))
                rows.append({"params": 1.0, "tokens": C / 6, "flops": C, "batch_tokens": B, "lr": lr, "loss_val": L,
                             "status": "completed"})
    return pd.DataFrame(rows)


def test_recovers_exponents_from_synthetic_grid():
    r = fit_hparams(load_hparams(synthetic_grid(), form="C"), form="C", bootstrap=200)
    assert r.params["B_C_exp"] == pytest.approx(TRUE["B_C_exp"], abs=0.03)
    assert r.params["lr_C_exp"] == pytest.approx(TRUE["lr_C_exp"], abs=0.03)
    for k in ("B_C_exp", "lr_C_exp"):
        lo, hi = r.intervals[k]
        assert lo <= TRUE[k] <= hi
    sm = r.diagnostics["smooth_fit"]["params"]
    assert sm["B_C_exp"] == pytest.approx(TRUE["B_C_exp"], abs=0.02)
    assert sm["lr_C_exp"] == pytest.approx(TRUE["lr_C_exp"], abs=0.02)
    assert not r.diagnostics["edge_warnings"]
    b, lr = r.predictions["B_opt"], r.predictions["lr_opt"]
    tb, tl = predict_hparams(TRUE, "C", C=r.predictions["C"])
    assert b == pytest.approx(tb, rel=0.3) and lr == pytest.approx(tl, rel=0.3)


def test_edge_of_grid_is_flagged():
    df = synthetic_grid(shift=2.5)   # the optimum sits below every swept batch and LR
    r = fit_hparams(load_hparams(df, form="C"), form="C", bootstrap=0)
    assert len(r.diagnostics["edge_warnings"]) == 4
    assert "widen the grid" in r.diagnostics["edge_warnings"][0]


def test_bad_grids_and_diverged_runs():
    df = synthetic_grid()
    with pytest.raises(FitError, match="one batch size"):
        load_hparams(df[df.batch_tokens == df.batch_tokens.iloc[0]], form="C")
    d = df.copy()
    d.loc[0, "status"], d.loc[0, "loss_val"] = "diverged", np.nan
    h = load_hparams(d, form="C")
    assert h.excluded == [{"row": 0, "reason": "status=diverged"}]
    with pytest.raises(FitError, match="is in tokens"):
        load_hparams(df, form="C", batch_unit="sequences", seq_len=128)
    with pytest.raises(FitError, match="--batch-unit sequences needs --seq-len"):
        load_hparams(df.rename(columns={"batch_tokens": "batch"}), form="C", batch_unit="sequences")
    with pytest.raises(FitError, match="at least 2 cells"):
        fit_hparams(load_hparams(df[df.flops == 1e17], form="C"), form="C")


def test_cli_json(tmp_path, capsys):
    path = tmp_path / "grid.csv"
    synthetic_grid().to_csv(path, index=False)
    assert fit_main(["hparams", str(path), "--bootstrap", "50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("B_coef", "B_C_exp", "lr_coef", "lr_C_exp"):
        assert k in out and k in out["intervals"]
    assert all("near_optimal" in c for c in out["diagnostics"]["cells"])
    assert fit_main(["hparams", str(path), "--bootstrap", "20", "--plot", str(tmp_path / "p")]) == 0
    assert "near-optimal" not in capsys.readouterr().err
    for stem in ("hparam_heatmaps", "hparam_laws"):
        assert (tmp_path / "p" / f"{stem}.png").stat().st_size > 5000


def _steplaw():
    ref = reference_dir()
    p = ref / "steplaw" / "dense_lr_bs_loss.csv" if ref else None
    if p is None or not p.exists():
        pytest.skip("Step Law reference data absent (set LAB_REFERENCE); nothing to compare against")
    df = pd.read_csv(p)
    return load_hparams(df, form="ND", N="N", D="D", batch="bs", batch_unit="sequences", seq_len=2048, lr="lr",
                        loss="smooth loss")


def test_steplaw_published_law_lands_near_each_cells_best():
    h = _steplaw()
    assert len(h.cells) == 17
    pub = {"lr_coef": 1.79, "lr_N_exp": -0.713, "lr_D_exp": 0.307, "B_coef": 0.58, "B_D_exp": 0.571}
    g = grid_gap(h, pub, "ND")
    # PROVENANCE-hparams-mixing.md: mean 0.096%, median 0.067%, max 0.31%
    assert g.mean() * 100 == pytest.approx(0.096, abs=0.003)
    assert np.median(g) * 100 == pytest.approx(0.067, abs=0.003)
    assert g.max() * 100 == pytest.approx(0.31, abs=0.005)


def test_steplaw_refit_reproduces_independent_refit():
    h = _steplaw()
    r = fit_hparams(h, form="ND", band=0.0025, bootstrap=100)
    p = r.params
    # independent refit: 129 near-optimal runs, lr = 77.7 N^-0.766 D^0.197, B = 0.209 D^0.613
    assert r.diagnostics["near_optimal_total"] == 129
    assert p["lr_coef"] == pytest.approx(77.7, rel=0.01)
    assert p["lr_N_exp"] == pytest.approx(-0.766, abs=0.002)
    assert p["lr_D_exp"] == pytest.approx(0.197, abs=0.002)
    assert p["B_coef"] == pytest.approx(0.209, rel=0.01)
    assert p["B_D_exp"] == pytest.approx(0.613, abs=0.002)
    # and the lab's own law does as well as the published one on the nearest-grid-point gap
    pub = {"lr_coef": 1.79, "lr_N_exp": -0.713, "lr_D_exp": 0.307, "B_coef": 0.58, "B_D_exp": 0.571}
    assert grid_gap(h, p, "ND").mean() <= 1.05 * grid_gap(h, pub, "ND").mean()
    assert grid_gap(h, p, "ND").mean() < 0.001


@pytest.mark.slow
def test_real_cpu_batch_lr_sweep_fits_and_feeds_a_recipe(tmp_path, fixture_corpus):
    """A real tiny batch x LR sweep (8 runs on the fixture slice) -> a fit -> a recipe that uses it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from lab.recipe.build import build_recipe

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "bl"
    proc = subprocess.run([sys.executable, "-m", "lab.sweep", "-cn", "batch_lr_smoke", "-m", f"hydra.sweep.dir={out}"],
                          cwd=root, env={**os.environ, "LAB_SWEEP_PROBE": "0"}, capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    h = load_hparams(out, form="C")
    assert len(h.cells) == 2 and all(c["runs"] == 4 for c in h.cells)
    r = fit_hparams(h, form="C", bootstrap=50)
    assert all(np.isfinite(v) for v in r.params.values())
    assert r.predictions["B_opt"] > 0 and r.predictions["lr_opt"] > 0
    from tests.conftest import fake_sweep  # a loss-law sweep of known law (records only, no training)

    loss_sweep = fake_sweep(tmp_path / "loss")
    rec = build_recipe([str(loss_sweep)], target_flops=1e11, bootstrap=0, hparam_sweeps=[str(out)])
    assert rec["laws"]["lr"]["fitted"] is True and rec["laws"]["batch_size"]["fitted"] is True
    assert rec["train"]["batch_tokens"] % rec["data"]["seq_len"] == 0
    assert rec["train"]["lr"] == pytest.approx(rec["laws"]["lr"]["lr_opt_law"])


def _nd_grid(lr_of, noise=0.002, seed=0) -> pd.DataFrame:
    """An (N, D) grid of batch x LR bowls: lr_opt = lr_of(N, D), B_opt = 1024 everywhere, with noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for N in (1e4, 3e4, 1e5):
        for D in (1e6, 2e6, 4e6):
            for B in (256, 512, 1024, 2048, 4096):
                for fl in 2.0 ** np.arange(-2, 2.5, 0.5):
                    lr = lr_of(N, D) * fl
                    L = 2.5 * (1 + 0.004 * np.log(B / 1024) ** 2 + 0.006 * np.log(fl) ** 2) * np.exp(rng.normal(0, noise))
                    rows.append({"params": N, "tokens": D, "flops": 6 * N * D, "batch_tokens": B, "lr": lr,
                                 "loss_val": L, "status": "completed"})
    return pd.DataFrame(rows)


def test_resolved_law_holds_unresolved_exponents_at_zero_and_keeps_the_rest():
    from lab.fit.hparams import resolved_law

    df = _nd_grid(lambda N, D: 0.5 * N ** -0.5)  # no D dependence; batch optimum flat in D
    res = fit_hparams(load_hparams(df, form="ND"), form="ND", bootstrap=40, band=0.003)
    rl = resolved_law(res, bootstrap=40, at={"N": 5e4, "D": 3e6}, floor_batch=256)
    assert rl.params["lr_D_exp"] == 0.0 and rl.params["B_D_exp"] == 0.0
    assert any("lr_D_exp" in n for n in rl.notes) and any("B_D_exp" in n for n in rl.notes)
    assert rl.params["lr_N_exp"] == pytest.approx(-0.5, abs=0.1)
    lo, hi = rl.intervals["lr_N_exp"]
    assert lo <= -0.5 <= hi and hi - lo < 0.5
    assert rl.predictions["lr_opt"] == pytest.approx(0.5 * 5e4 ** -0.5, rel=0.3)
    assert rl.predictions["B_opt"] == pytest.approx(1024, rel=0.3)
    assert rl.health["verdict"] == "ok", rl.health
    # an exponent that is resolved is kept: lr falling with D too
    res = fit_hparams(load_hparams(_nd_grid(lambda N, D: 30 * N ** -0.5 * D ** -0.3), form="ND"), form="ND",
                      bootstrap=40, band=0.003)
    rl = resolved_law(res, bootstrap=40, at={"N": 5e4, "D": 3e6})
    assert rl.params["lr_D_exp"] == pytest.approx(-0.3, abs=0.12)
    assert not any("lr_D_exp" in n for n in rl.notes)
