"""Comparing two ladders (lab.fit.compare, lab.plots.compare): a known multiplier is recovered.

Ladder A follows a Chinchilla law L(N, D) = E + A / N^alpha + B / D^beta on IsoFLOP budgets with
C = 6 N D; ladder B is the same law at (sqrt(k) N, sqrt(k) D). B's run at (N, D) then has A's loss
at compute k C, so B's compute-optimal loss at C is A's at k C exactly: the multiplier is k at every
C. With E = 0 the minima lie on a power law in C; with a floor (E = 1.2, a realistic one) they bend,
and k must still come out right: per budget through A's measured minima in ln(L* - E), at the
target through frontiers with a floor. Near that floor the frontier's log-log slope is 0.006-0.03,
so 0.2% noise per run is 5-25% in k per budget: the noisy tests check coverage and the geometric
mean of the interpolated rows, not each row to 5%.
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")  # the test's choice; lab.plots never sets a backend

import numpy as np
import pandas as pd
import pytest

from lab.fit.compare import (
    LadderComparison,
    compare_ladders,
    compute_for_loss,
    fit_frontier,
    frontier_loss,
)
from lab.fit.engine.errors import FitError
from lab.plots.compare import plot_multiplier, plot_profiles_overlay

LAW = {"A": 60.0, "B": 900.0, "alpha": 0.45, "beta": 0.42}
BUDGETS = (1e17, 1e18, 1e19, 1e20)


def ladder(k: float = 1.0, seed: int = 0, budgets=BUDGETS, sizes: int = 7, noise: float = 0.002,
           E: float = 0.0, **cols) -> pd.DataFrame:
    """IsoFLOP runs of the law at (sqrt(k) N, sqrt(k) D): sizes spread 6x either side of the optimum."""
    A, B, al, be = LAW["A"], LAW["B"], LAW["alpha"], LAW["beta"]
    G, a = (al * A / (be * B)) ** (1 / (al + be)), be / (al + be)
    rng, s, rows = np.random.default_rng(seed), np.sqrt(k), []
    for C in budgets:
        for N in G * (C / 6) ** a * np.geomspace(1 / 6, 6, sizes):
            D = C / (6 * N)
            loss = (E + A / (s * N) ** al + B / (s * D) ** be) * np.exp(noise * rng.standard_normal())
            rows.append({"params": N, "tokens": D, "flops": C, "loss_val": loss, "budget": C, **cols})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def k2() -> LadderComparison:
    return compare_ladders(ladder(1.0, seed=0), ladder(2.0, seed=1), bootstrap=100, names=("base", "new"))


@pytest.fixture(scope="module")
def k2_floor_noisy() -> LadderComparison:
    return compare_ladders(ladder(1.0, seed=0, E=1.2), ladder(2.0, seed=1, E=1.2), bootstrap=100)


def _geomean(rows) -> float:
    return float(np.exp(np.mean([np.log(r.k) for r in rows])))


def test_a_known_multiplier_is_recovered(k2):
    # 4 minima: the frontiers carry a floor, which the data put at ~0; the extra parameter widens the
    # target a little, so 5% there, and the pure power laws (the true form here) to 3%
    assert k2.forms == ("floor", "floor")
    assert k2.multiplier == pytest.approx(2.0, rel=0.05)
    assert k2.alternative["multiplier"] == pytest.approx(2.0, rel=0.03)
    lo, hi = k2.interval
    assert lo < 2.0 < hi and lo > 1
    for row in k2.budgets:
        assert row.k == pytest.approx(2.0, rel=0.03)
        assert row.interval[0] < 2.0 < row.interval[1]
    assert k2.target_flops == pytest.approx(10 * max(BUDGETS), rel=1e-6)
    assert k2.verdict == "ok", k2.reasons
    assert k2.n_draws > 75
    assert k2.budgets[-1].extrapolated  # B's largest budget reads A's minima at 2x A's largest
    assert not any(r.extrapolated for r in k2.budgets[:-1])


def test_a_ladder_against_itself_is_not_distinguishable():
    cmp = compare_ladders(ladder(1.0, seed=0), ladder(1.0, seed=7), bootstrap=100)
    assert cmp.multiplier == pytest.approx(1.0, rel=0.05)
    assert cmp.interval[0] < 1.0 < cmp.interval[1]
    assert cmp.verdict == "weak"
    assert any("not distinguishable" in r for r in cmp.reasons)


def test_a_floor_does_not_bias_the_multiplier_without_noise():
    cmp = compare_ladders(ladder(1.0, seed=0, E=1.2, noise=0.0), ladder(2.0, seed=1, E=1.2, noise=0.0),
                          bootstrap=100)
    for row in cmp.budgets:  # the pure power law read these as 1.9-3.9
        assert row.k == pytest.approx(2.0, rel=0.01)
        assert row.interval[0] < 2.0 < row.interval[1]
    assert cmp.forms == ("floor", "floor")
    assert cmp.frontier_a["E"] == pytest.approx(1.2, rel=1e-3) and cmp.frontier_a["misread"] < 1.01
    assert cmp.multiplier == pytest.approx(2.0, rel=0.05)
    assert cmp.interval[0] < 2.0 < cmp.interval[1]
    assert cmp.alternative["multiplier"] < 1.2  # the pure power laws' reading, far off
    assert cmp.verdict == "weak"  # honest: the forms disagree, so the target rests on the fitted floors
    assert any("forms disagree" in r for r in cmp.reasons)
    assert any("E + (C_c / C)^alpha_C" in n for n in cmp.notes)


def test_a_floor_with_noise_is_covered_per_budget_and_weak_at_the_target(k2_floor_noisy):
    cmp = k2_floor_noisy
    for row in cmp.budgets:
        assert row.interval[0] < 2.0 < row.interval[1]
    assert _geomean([r for r in cmp.budgets if not r.extrapolated]) == pytest.approx(2.0, rel=0.1)
    assert cmp.budgets[-1].extrapolated and "extrapolated" in cmp.budgets[-1].note
    assert cmp.verdict == "weak"
    assert any("spans a factor" in r for r in cmp.reasons)  # 4 noisy minima do not pin k 10x beyond


def test_a_ladder_with_a_floor_against_itself_gives_one():
    cmp = compare_ladders(ladder(1.0, seed=0, E=1.2), ladder(1.0, seed=7, E=1.2), bootstrap=100)
    for row in cmp.budgets:
        assert row.interval[0] < 1.0 < row.interval[1]
    assert _geomean([r for r in cmp.budgets if not r.extrapolated]) == pytest.approx(1.0, rel=0.1)
    assert cmp.interval[0] < 1.0 < cmp.interval[1]
    assert cmp.verdict == "weak"
    assert any("not distinguishable" in r for r in cmp.reasons)


def test_a_bent_frontier_is_flagged_when_too_few_minima_place_a_floor():
    three = BUDGETS[:3]
    cmp = compare_ladders(ladder(1.0, seed=0, E=0.3, budgets=three), ladder(2.0, seed=1, E=0.3, budgets=three),
                          bootstrap=50)
    assert cmp.forms == ("power", "power")
    assert any("only 3 profile minima" in n for n in cmp.notes)
    assert cmp.verdict != "ok"
    assert any("power law" in r for r in cmp.reasons)
    assert cmp.frontier_a["misread"] > 1.2
    four = compare_ladders(ladder(1.0, seed=0, E=0.3), ladder(2.0, seed=1, E=0.3), bootstrap=20)
    assert four.forms == ("floor", "floor") and four.frontier_a["misread"] < 1.2


def test_fit_frontier_recovers_a_floor_and_says_when_it_cannot():
    lnC = np.log([1e17, 1e18, 1e19, 1e20])
    L = frontier_loss(np.exp(lnC), 1e13, 0.2, E=1.2)
    f = fit_frontier(lnC, L)
    assert f["E"][0] == pytest.approx(1.2, rel=1e-4) and f["alpha_C"][0] == pytest.approx(0.2, rel=1e-3)
    assert f["C_c"][0] == pytest.approx(1e13, rel=0.02) and not f["pinned"][0]
    assert compute_for_loss(L, f["C_c"], f["alpha_C"], f["E"]) == pytest.approx(np.exp(lnC), rel=1e-3)
    assert compute_for_loss(1.1, 1e13, 0.2, E=1.2) == np.inf  # below the floor: never reached
    power = fit_frontier(lnC, frontier_loss(np.exp(lnC), 1e13, 0.2), floor=False)
    assert power["E"][0] == 0 and power["alpha_C"][0] == pytest.approx(0.2)
    flat = fit_frontier(lnC, np.array([1.5, 1.01, 1.0, 1.0]))  # stops falling: E runs to the lowest minimum
    assert flat["pinned"][0]
    assert np.isnan(fit_frontier(lnC[:3], L[:3])["E"][0])  # 3 minima do not carry a floor


def test_json_round_trip_report_and_html(k2, k2_floor_noisy):
    for cmp in (k2, k2_floor_noisy):  # the second has an unbounded interval end (inf -> None)
        d = cmp.to_json()
        json.dumps(d, allow_nan=False)
        back = LadderComparison.from_json(json.loads(json.dumps(d)))
        assert back.to_json() == d
        assert back.forms == cmp.forms and back.alternative["multiplier"] == pytest.approx(cmp.alternative["multiplier"])
        assert back.fits is None and back.budgets[0].k == pytest.approx(cmp.budgets[0].k)
    text = k2.report()
    assert "multiplier" in text and f"{k2.multiplier:.4g}" in text and "new" in text and "pure power" in text
    page = k2._repr_html_()
    assert page.startswith("<table>") and page.count("<tr>") == len(k2.budgets) + 2


def test_tokenizers_that_differ_are_flagged():
    cmp = compare_ladders(ladder(1.0, seed=0, tokenizer="gpt2"), ladder(2.0, seed=1, tokenizer="llama"),
                          bootstrap=20)
    assert cmp.verdict == "weak"
    assert any("bits per byte" in r for r in cmp.reasons)


@pytest.mark.parametrize("which", [0, 1])
def test_a_ladder_with_two_budgets_is_refused_by_name(which):
    ladders = [ladder(1.0), ladder(2.0)]
    ladders[which] = ladder(1.0, budgets=BUDGETS[:2])
    with pytest.raises(FitError, match=f"^ladder {'AB'[which]}: .*at least 3 compute budgets"):
        compare_ladders(*ladders, bootstrap=0)


def test_ladders_that_do_not_overlap_are_refused():
    with pytest.raises(FitError, match="no overlap"):
        compare_ladders(ladder(1.0), ladder(1.0, budgets=(1e22, 1e23, 1e24)), bootstrap=0)


def test_bad_arguments_are_refused():
    with pytest.raises(FitError, match="level"):
        compare_ladders(ladder(), ladder(), level=1.5)
    with pytest.raises(FitError, match="target_flops"):
        compare_ladders(ladder(), ladder(), target_flops=-1.0)


def test_plots_draw_and_return_axes(k2, k2_floor_noisy):
    import matplotlib.pyplot as plt

    assert plot_multiplier(k2_floor_noisy) is not None  # infinite interval ends are left out
    ax = plot_multiplier(k2)
    assert len(ax.lines) >= 2 and len(ax.collections) >= 1  # curve, k = 1; band
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    ax2 = plot_profiles_overlay(*k2.fits, names=k2.names)
    assert len(ax2.lines) >= 2 * len(BUDGETS) and ax2.get_xscale() == "log"
    assert plot_multiplier(LadderComparison.from_json(k2.to_json())) is not None  # plots a reloaded one
    plt.close("all")
