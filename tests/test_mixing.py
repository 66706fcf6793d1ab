"""Data-mixing laws (lab.fit.mixing: law, optimize, nested, regression): recovery, optimiser, errors, references."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lab.fit.engine.errors import FitError
from lab.fit.mixing.law import fit_mixing_law, load_mixing, target_weights
from lab.fit.mixing.nested import nested_predict
from lab.fit.mixing.optimize import choose_mixture, make_box, optimize, project
from lab.paths import reference_dir

DOMS = ["a", "b", "c"]
TRUE = {  # per validation domain: c, k, t (sum 0)
    "a": (1.5, 0.6, [-1.2, 0.7, 0.5]),
    "b": (2.0, 0.4, [0.8, -1.6, 0.8]),
    "c": (1.0, 0.9, [0.3, 0.4, -0.7]),
}


def law_loss(R: np.ndarray, scale: float = 1.0) -> np.ndarray:
    return np.column_stack([c * scale + k * np.exp(R @ np.array(t)) for c, k, t in TRUE.values()])


def synthetic(n: int = 40, noise: float = 0.002, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    R = rng.dirichlet(np.ones(3), size=n)
    L = law_loss(R) + noise * rng.standard_normal((n, 3))
    df = pd.DataFrame(R, columns=[f"r_{d}" for d in DOMS])
    for i, v in enumerate(TRUE):
        df[f"loss_{v}"] = L[:, i]
    return df


def test_recovers_known_law_and_gauge():
    m = fit_mixing_law(load_mixing(synthetic()), bootstrap=100)
    for i, (c, k, t) in enumerate(TRUE.values()):
        assert m.c[i] == pytest.approx(c, abs=0.05)
        assert np.exp(m.log_k[i]) == pytest.approx(k, rel=0.1)
        np.testing.assert_allclose(m.t[i], t, atol=0.12)
        assert abs(m.t[i].sum()) < 1e-9                      # the reported gauge
    iv = m.intervals()
    inside = [iv[v]["c"][0] <= c <= iv[v]["c"][1] for v, (c, _, _) in TRUE.items()]
    assert sum(inside) >= 2
    assert m.diagnostics["held_out"]["mae"]["mean"] < 0.005   # noise is 0.002
    assert m.diagnostics["held_out"]["kind"] == "leave-one-mixture-out"


def test_optimiser_finds_grid_optimum_and_respects_constraints():
    m = fit_mixing_law(load_mixing(synthetic(noise=0.0)), bootstrap=30)
    w = target_weights(None, m.val_domains)
    opt = optimize(m, w, make_box(DOMS), natural={"a": 0.5, "b": 0.3, "c": 0.2})
    g = np.linspace(0, 1, 201)
    grid = np.array([(x, y, 1 - x - y) for x in g for y in g if x + y <= 1 + 1e-12])
    best = (law_loss(grid) @ w).min()
    assert opt["target"] == pytest.approx(best, abs=2e-4)
    assert opt["uniform"]["gain"] > 0 and opt["natural"]["gain"] > 0
    assert set(opt["mixture_interval"]) == set(DOMS)
    # constraints: min/max shares and an epoch cap (c has 1e6 unique tokens, D = 1e7, 2 epochs -> <= 0.2)
    box = make_box(DOMS, min_share="a=0.3", max_share="b=0.25", max_epochs=2, target_tokens=1e7,
                   unique_tokens={"a": 1e9, "b": 1e9, "c": 1e6})
    o2 = optimize(m, w, box)
    r = np.array(list(o2["mixture"].values()))
    assert r.sum() == pytest.approx(1) and r[0] >= 0.3 - 1e-9 and r[1] <= 0.25 + 1e-9 and r[2] <= 0.2 + 1e-9
    ok = grid[(grid[:, 0] >= 0.3) & (grid[:, 1] <= 0.25) & (grid[:, 2] <= 0.2)]
    assert o2["target"] <= (law_loss(ok) @ w).min() + 2e-4
    assert o2["binding"]


def test_hull_search_stays_among_the_fitted_mixtures_and_finds_the_best_there():
    df = synthetic(noise=0.0)
    m = fit_mixing_law(load_mixing(df), bootstrap=30)
    w = target_weights(None, m.val_domains)
    H = np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]])   # a triangle inside the simplex
    opt = optimize(m, w, make_box(DOMS), hull=H)
    r = np.array(list(opt["mixture"].values()))
    lam = np.linalg.solve(H.T, r)                                         # r = lam @ H
    assert lam.min() >= -1e-6 and "convex hull of the 3" in opt["search"]
    g = np.linspace(0, 1, 201)
    lams = np.array([(x, y, 1 - x - y) for x in g for y in g if x + y <= 1 + 1e-12])
    assert opt["target"] == pytest.approx((law_loss(lams @ H) @ w).min(), abs=2e-4)
    for ab in opt["mixture_interval"].values():                           # the draws' optima stay inside too
        assert 0.2 - 1e-6 <= ab[0] <= ab[1] <= 0.6 + 1e-6
    with pytest.raises(FitError, match="hull"):
        optimize(m, w, make_box(DOMS, min_share="a=0.7"), hull=H)


def test_the_uniform_mixture_is_kept_unless_the_optimum_clearly_beats_it():
    clear = optimize(fit_mixing_law(load_mixing(synthetic(noise=0.002)), bootstrap=60),
                     target_weights(None, DOMS), make_box(DOMS))
    pick = choose_mixture(clear)
    assert pick["chosen"] == "optimum" and pick["mixture"] == clear["mixture"] and pick["gain_interval"][0] > 0
    assert "excludes 0" in pick["why"]
    # a flat law (the mixture barely matters) under noise: the optimum is noise, uniform is kept
    rng = np.random.default_rng(1)
    df = synthetic(n=12, noise=0.0)
    for v in DOMS:
        df[f"loss_{v}"] = 2.0 + 0.002 * df[f"r_{v}"] + 0.05 * rng.standard_normal(len(df))
    flat = optimize(fit_mixing_law(load_mixing(df), bootstrap=60), target_weights(None, DOMS), make_box(DOMS))
    pick = choose_mixture(flat)
    assert pick["chosen"] == "uniform" and pick["mixture"] == flat["uniform"]["mixture"]
    assert pick["gain_interval"][0] <= 0 and "cannot tell" in pick["why"] and pick["target_interval"]


def test_projection_lands_in_the_box():
    box = make_box(DOMS, min_share="a=0.1", max_share="c=0.2")
    X = np.random.default_rng(1).normal(size=(50, 3))
    P = project(X, box)
    assert np.allclose(P.sum(1), 1) and (P[:, 0] >= 0.1 - 1e-9).all() and (P[:, 2] <= 0.2 + 1e-9).all()


def test_bad_input_errors():
    df = synthetic(10)
    bad = df.copy()
    bad.loc[3, "r_a"] += 0.2
    with pytest.raises(FitError, match=r"row '3'.*sum to 1\.2"):
        load_mixing(bad)
    neg = df.copy()
    neg.loc[2, "r_b"] = -0.1
    with pytest.raises(FitError, match="negative proportion"):
        load_mixing(neg)
    with pytest.raises(FitError, match="4 parameters .* need at least 5 runs"):
        fit_mixing_law(load_mixing(df.head(4)), bootstrap=0)
    with pytest.raises(FitError, match="unknown domain 'z'.*allowed"):
        target_weights("z=1", ["a", "b"])
    with pytest.raises(FitError, match="unknown validation domain"):
        load_mixing(df, val_domains=["zz"])
    with pytest.raises(FitError, match="no feasible mixture: the minimum shares sum to 1.2"):
        make_box(DOMS, min_share="a=0.6,b=0.6")
    with pytest.raises(FitError, match="maximum shares sum to"):
        make_box(DOMS, max_epochs=1, target_tokens=1e9, unique_tokens={"a": 1e6, "b": 1e6, "c": 1e6})
    with pytest.raises(FitError, match="--min-share: unknown domain 'q'"):
        make_box(DOMS, min_share="q=0.1")
    with pytest.raises(FitError, match="no mixture columns"):
        load_mixing(pd.DataFrame({"x": [1.0], "loss_a": [2.0]}))


def test_nested_prediction_recovers_target_size():
    """Mixtures at 3 sizes with L_g(N) = E_g + A N^-0.3 (E_g from the law, D = 20 N): predict at 10x."""
    rng = np.random.default_rng(0)
    R = rng.dirichlet(np.ones(3), size=12)
    rows = []
    for N in (1e5, 3e5, 1e6):
        L = law_loss(R) + 20.0 * N ** -0.3 + 0.001 * rng.standard_normal((12, 3))
        for j in range(12):
            rows.append({**{f"r_{d}": R[j, i] for i, d in enumerate(DOMS)}, "params": N, "tokens": 20 * N,
                         **{f"loss_{v}": L[j, i] for i, v in enumerate(TRUE)}})
    data = load_mixing(pd.DataFrame(rows))
    pred, rep = nested_predict(data, 1e7)
    assert rep["target_tokens"] == pytest.approx(2e8) and len(pred) == 12
    truth = law_loss(pred.R) + 20.0 * 1e7 ** -0.3
    assert np.abs(pred.L - truth).max() < 0.02
    with pytest.raises(FitError, match="needs runs at several D per size"):
        nested_predict(data, 1e7, target_tokens=1e10)
    with pytest.raises(FitError, match="fewer than 3 sizes"):
        nested_predict(data.subset(data.N < 2e5), 1e7)


def test_nested_prediction_with_a_token_law():
    """Runs at two D per size: L = E_g + A N^-0.3 + B D^-0.25; the prediction at (N, D) off the design line."""
    rng = np.random.default_rng(1)
    R = rng.dirichlet(np.ones(3), size=10)
    rows = []
    for N in (1e5, 3e5, 1e6):
        for tpp in (10, 40):
            L = law_loss(R) + 20.0 * N ** -0.3 + 30.0 * (tpp * N) ** -0.25 + 0.001 * rng.standard_normal((10, 3))
            for j in range(10):
                rows.append({**{f"r_{d}": R[j, i] for i, d in enumerate(DOMS)}, "params": N, "tokens": tpp * N,
                             **{f"loss_{v}": L[j, i] for i, v in enumerate(TRUE)}})
    data = load_mixing(pd.DataFrame(rows))
    with pytest.raises(FitError, match="needs --target-tokens"):
        nested_predict(data, 3e6)
    pred, rep = nested_predict(data, 3e6, target_tokens=6e7)
    assert "B_g D^-beta" in rep["form"]
    truth = law_loss(pred.R) + 20.0 * 3e6 ** -0.3 + 30.0 * 6e7 ** -0.25
    assert np.abs(pred.L - truth).max() < 0.03


@pytest.mark.slow
def test_regression_method_and_cli(tmp_path):
    df = synthetic(60, seed=3)
    tr, te = df.iloc[:48], df.iloc[48:]
    tr.to_csv(tmp_path / "train.csv", index=False)
    te.to_csv(tmp_path / "test.csv", index=False)
    cmd = [sys.executable, "-m", "lab.fit", "mixing", str(tmp_path / "train.csv"), "--method", "both",
           "--predict", str(tmp_path / "test.csv"), "--optimize", "--min-share", "a=0.1", "--bootstrap", "50",
           "--iterations", "200", "--cv-folds", "5", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert set(out["comparison"]["held_out_mae"]) == {"law", "regression"}
    assert out["law"]["diagnostics"]["held_out"]["mae"]["mean"] < 0.005
    assert out["comparison"]["predict_mae"]["law"] < 0.005
    assert out["comparison"]["predict_mae"]["regression"] < 0.1
    rows = out["law"]["predictions"]["rows"]
    assert len(rows) == 12 and set(TRUE) <= set(rows[0])
    for meth in ("law", "regression"):
        assert out[meth]["optimum"]["mixture"]["a"] >= 0.1 - 1e-9
    # one method: parameters and predictions at the top level; bad input exits 2 naming the field
    p1 = subprocess.run(cmd[:5] + ["--predict", str(tmp_path / "test.csv"), "--bootstrap", "0", "--json"],
                        capture_output=True, text=True, timeout=300)
    one = json.loads(p1.stdout)
    assert "params" in one and isinstance(one["predictions"], list) and "a" in one["predictions"][0]
    p2 = subprocess.run(cmd[:5] + ["--optimize", "--max-share", "a=0.1,b=0.1,c=0.1"], capture_output=True, text=True)
    assert p2.returncode == 2 and "no feasible mixture" in p2.stderr
    p3 = subprocess.run(cmd[:5] + ["--optimize", "--hull", "--bootstrap", "30"], capture_output=True, text=True,
                        timeout=300)
    assert p3.returncode == 0 and "search: convex hull of the" in p3.stdout and "choice: the optimum's" in p3.stdout


# ------------------------------------------------------------------------------------ references
REF = reference_dir()
MIXREF = REF / "mixinglaws" if REF else None
REGREF = REF / "regmix" if REF else None
_PAT = re.compile(r"(\d+[MB])_(?:.+_)?(\d+)-((?:[0-9.e]+-?)+)$")


def read_mixinglaws(path: Path, step: int) -> pd.DataFrame:
    """The authors' ``<ckpt> <valid file> <loss>`` lines -> one row per mixture (deduplicated, idx <= 900)."""
    recs = {}
    for line in set(path.read_text().splitlines()):
        parts = line.split()
        if len(parts) != 3:
            continue
        ck = parts[0].rstrip("/").split("/")
        m = _PAT.match(ck[-2])
        if not m or ck[-1] != str(step) or int(m.group(2)) > 900:
            continue
        r = tuple(float(x) for x in m.group(3).split("-"))
        dom = re.search(r"valid\.([^/]+)\.bin$", parts[1]).group(1)
        recs.setdefault(r, {})[dom] = float(parts[2])
    return pd.DataFrame([{**{f"r_{j}": x for j, x in enumerate(r)}, **{f"loss_{d}": v for d, v in L.items()}}
                         for r, L in sorted(recs.items())])


@pytest.mark.skipif(MIXREF is None or not (MIXREF / "2Mix").is_dir(), reason="shared/reference/mixinglaws absent")
def test_two_domain_law_matches_published_70M():
    """Ye et al.'s 2Mix at 70M, 30k steps: reducible loss exp(k r_own + b) with their (k, b); LOO MAE <= 0.01."""
    df = read_mixinglaws(MIXREF / "2Mix" / "70M.txt", 30000).rename(columns={"r_0": "r_Github", "r_1": "r_Pile-CC"})
    data = load_mixing(df)
    assert data.domains == ["Github", "Pile-CC"] and len(data) == 5
    m = fit_mixing_law(data, bootstrap=0, ridge=0.0)   # the paper's unpenalised law
    published = {"Github": (-1.64, -0.68), "Pile-CC": (-2.52, -0.63)}
    for i, v in enumerate(data.val_domains):
        own = np.array([1.0, 0.0]) if v == "Github" else np.array([0.0, 1.0])
        z1, z0 = m.log_k[i] + m.t[i] @ own, m.log_k[i] + m.t[i] @ (1 - own)
        k, b = z1 - z0, z0
        assert k == pytest.approx(published[v][0], abs=0.1), v
        assert b == pytest.approx(published[v][1], abs=0.03), v
    assert m.diagnostics["held_out"]["mae"]["mean"] <= 0.01
    # the default ridge choice must not lose to the plain law where the plain law cross-validates better
    auto = fit_mixing_law(data, bootstrap=0)
    assert auto.diagnostics["held_out"]["mae"]["mean"] <= m.diagnostics["held_out"]["mae"]["mean"] * (1 + 1e-9)


@pytest.mark.skipif(REGREF is None or not REGREF.is_dir(), reason="shared/reference/regmix absent")
def test_regmix_regression_spearman_1m():
    """RegMix: LightGBM on 512 1M-param runs ranks the 256 unseen mixtures' Pile-CC loss at rho ~ 0.99."""
    from scipy.stats import spearmanr

    from lab.fit.mixing.regression import fit_regression

    def table(kind):
        m = pd.read_csv(REGREF / f"{kind}_mixture_1m.csv").rename(columns=lambda c: c.replace("train_the_pile_", "r_"))
        lo = pd.read_csv(REGREF / f"{kind}_pile_loss_1m.csv").rename(
            columns=lambda c: c.replace("metric/the_pile_", "loss_").replace("_val_loss", ""))
        return m.merge(lo, on="index")

    tr = load_mixing(table("train"), val_domains=["pile_cc"])
    te = load_mixing(table("test"), val_domains=["pile_cc"])
    assert len(tr) == 512 and len(te) == 256 and len(tr.domains) == 17
    m = fit_regression(tr, cv_folds=3)
    rho = spearmanr(m.predict(te.R)[:, 0], te.L[:, 0]).statistic
    assert rho >= 0.985, rho   # published 0.9892; lab's check 0.990
    law = fit_mixing_law(tr, bootstrap=0, ridge=0.0, cv_folds=3)
    assert spearmanr(law.predict(te.R)[:, 0], te.L[:, 0]).statistic > 0.9


# ------------------------------------------------------------------------------------ real runs
@pytest.mark.slow
def test_tiny_real_mixture_sweep_fits_with_held_out_error(tmp_path):
    """10 Dirichlet mixtures of the fixture's 4 domains, trained for real; the law's held-out error is reported."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "mix"
    proc = subprocess.run([sys.executable, "-m", "lab.sweep", "-cn", "mixture_smoke", "-m", f"hydra.sweep.dir={out}"],
                          cwd=root, env={**os.environ, "LAB_SWEEP_PROBE": "0"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = load_mixing(out)
    assert len(data) == 10 and len(data.domains) == 4 and data.natural is not None
    p = subprocess.run([sys.executable, "-m", "lab.fit", "mixing", str(out), "--optimize", "--bootstrap", "50",
                        "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout)
    ho = res["diagnostics"]["held_out"]
    assert ho["kind"] == "leave-one-mixture-out" and 0 < ho["mae"]["mean"] < 0.5
    assert sum(res["optimum"]["mixture"].values()) == pytest.approx(1)
    assert res["optimum"]["natural"]["mixture"].keys() == res["optimum"]["mixture"].keys()
    # the recipe takes its mixture from this fit (nested is impossible with one size: said in the notes)
    sys.path.insert(0, str(Path(__file__).parent))
    from tests.conftest import fake_sweep

    from lab.recipe import load_recipe, write_recipe
    from lab.recipe.build import build_recipe
    rec = build_recipe([str(fake_sweep(tmp_path / "loss"))], target_flops=1e11, bootstrap=0, mixing_sweeps=[str(out)])
    mix = rec["laws"]["mixture"]
    assert mix["fitted"] is True and rec["data"]["mixture"] == mix["value"]
    assert sum(mix["value"].values()) == pytest.approx(1, abs=1e-5) and set(mix["value"]) == set(data.domains)
    assert any("mixture:" in n for n in rec["notes"])
    path, _ = write_recipe(rec, tmp_path / "recipe.yaml")
    load_recipe(path)


@pytest.mark.slow
def test_predict_rows_without_losses_and_nan_losses(tmp_path):
    """--predict on new mixtures (no loss columns) predicts every row; a missing loss does not break fits."""
    df = synthetic(30, seed=5)
    df.loc[4, "loss_b"] = np.nan
    df.to_csv(tmp_path / "fit.csv", index=False)
    new = pd.DataFrame({"r_a": [0.2, 0.5], "r_b": [0.3, 0.25], "r_c": [0.5, 0.25]})
    new.to_csv(tmp_path / "new.csv", index=False)
    for method in ("law", "regression"):
        p = subprocess.run([sys.executable, "-m", "lab.fit", "mixing", str(tmp_path / "fit.csv"), "--method", method,
                            "--predict", str(tmp_path / "new.csv"), "--bootstrap", "20", "--iterations", "50",
                            "--cv-folds", "5", "--optimize", "--json"], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        out = json.loads(p.stdout)
        assert len(out["predictions"]) == 2 and all(np.isfinite(r["b"]) for r in out["predictions"])
        assert out["optimum"]["target_interval"][0] < out["optimum"]["target"] < out["optimum"]["target_interval"][1]
    m = fit_mixing_law(load_mixing(df), bootstrap=0)
    assert m.diagnostics["ridge"]["chosen"]["b"] in (0.0, 1e-6, 1e-5)   # NaN rows no longer force the strongest ridge
    bad = subprocess.run([sys.executable, "-m", "lab.fit", "mixing", str(tmp_path / "fit.csv"), "--ridge", "x"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--ridge" in bad.stderr
