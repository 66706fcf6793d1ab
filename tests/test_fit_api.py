"""Fit results as notebooks use them: evaluate the law, save and load it back, show it as HTML."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import LAW, fake_sweep, law_loss
from lab.fit import FitResult, approach3, fit_kaplan, load_points


@pytest.fixture(scope="module")
def pts(tmp_path_factory):
    return load_points(str(fake_sweep(tmp_path_factory.mktemp("api") / "s", noise=0.001)))


def test_approach3_evaluates_its_law_and_survives_a_json_round_trip(pts, tmp_path):
    r = approach3(pts, bootstrap=40)
    C_t = r.predictions["C"]
    assert float(r.loss_at(C_t)) == pytest.approx(r.predictions["loss"], rel=1e-4)
    n, d, l = r.optimum(C_t)
    assert float(n) == pytest.approx(r.predictions["N_opt"], rel=0.01)
    assert r.predict(3e4, 1e6) == pytest.approx(law_loss(3e4, 1e6), rel=0.02)  # the known law, recovered
    path = tmp_path / "a3.json"
    path.write_text(r.dumps())
    back = FitResult.load(path)
    assert back.params == pytest.approx(r.params)
    assert back.intervals["alpha"] == pytest.approx(r.intervals["alpha"])
    assert back.loss_at([C_t / 10, C_t]) == pytest.approx(r.loss_at([C_t / 10, C_t]))
    assert back.predict(np.array([1e4, 3e4]), 1e6) == pytest.approx(r.predict(np.array([1e4, 3e4]), 1e6))
    assert abs(back.params["alpha"] - LAW["alpha"]) < 0.15


@pytest.mark.parametrize("form", ["ND", "C", "N"])
def test_kaplan_results_evaluate_after_loading(pts, form):
    r = fit_kaplan(pts, form=form, bootstrap=10)
    back = FitResult.from_json(json.loads(r.dumps()))
    if form == "N":
        x = np.log([2e3, 2e4])
        assert back.predict(N=np.exp(x)) == pytest.approx(r.extra["law"].predict(r.extra["theta"], {"lnN": x}), rel=1e-9)
    else:
        assert float(back.loss_at(r.predictions["C"])) == pytest.approx(r.predictions["loss"], rel=1e-6)


def test_html_table_shows_parameters_intervals_and_verdict(pts):
    r = approach3(pts, bootstrap=20)
    page = r._repr_html_()
    assert "<table>" in page and "alpha" in page and "verdict-" in page and "95% interval" in page
    assert r.health()._repr_html_().startswith('<span class="verdict')


def test_a_frontier_law_refuses_an_nd_prediction(pts):
    from lab.fit import FitError, fit_kaplan

    r = fit_kaplan(pts, form="C", bootstrap=0)
    with pytest.raises(FitError, match="loss_at"):
        r.predict(1e4, 1e6)


def test_from_json_refuses_what_is_not_a_fit():
    with pytest.raises(ValueError, match="not a fit result"):
        FitResult.from_json({"hello": 1})


def test_load_picks_one_fit_out_of_a_file_of_several(pts, tmp_path):
    r = approach3(pts, bootstrap=0)
    path = tmp_path / "all.json"
    path.write_text(json.dumps({"approach3": r.to_json(), "approach2": {"error": "too few budgets"}}))
    assert FitResult.load(path, "approach3").params == pytest.approx(r.params)
    with pytest.raises(ValueError, match="approach3"):
        FitResult.load(path)


def test_a_loaded_result_keeps_its_intervals_and_prints_them(pts, tmp_path):
    r = approach3(pts, bootstrap=20)
    path = tmp_path / "a3.json"
    path.write_text(r.dumps())
    back = FitResult.load(path)
    again = json.loads(back.dumps())
    assert again["intervals"] == json.loads(r.dumps())["intervals"] and again["intervals"]["alpha"]
    assert again["se"] == json.loads(r.dumps())["se"]
    lo, hi = back.intervals["alpha"]
    text = back.report()
    assert "bootstrap intervals" in text and f"[{lo:.4g}, {hi:.4g}]" in text


def test_a_nan_parameter_survives_loading():
    s = {"C_c": np.full(5, np.nan), "alpha_C": np.linspace(0.0, 0.01, 5)}
    r = FitResult("chinchilla approach 2", "L* = (C_c / C)^alpha_C", {"alpha_C": 0.0, "C_c": float("nan")}, s)
    doc = json.loads(r.dumps())
    assert doc["C_c"] is None
    back = FitResult.from_json(doc)
    assert list(back.params) == ["alpha_C", "C_c"] and np.isnan(back.params["C_c"])
    assert back.intervals["C_c"] == [None, None]
    # a null beside the fit that is no parameter stays out, and so does a bootstrap-free fit's null
    doc2 = {**doc, "error": None, "joint": None}
    doc2.pop("intervals")
    assert set(FitResult.from_json(doc2).params) == {"alpha_C", "C_c"}


def test_a_loaded_result_returns_the_verdict_the_fit_saved(pts):
    r = approach3(pts, bootstrap=20)
    assert r.diagnostics["health"] == r.health().to_json()
    back = FitResult.from_json(json.loads(r.dumps()))
    assert not back.samples
    assert back.health().to_json() == r.health().to_json()
    assert not any("no bootstrap intervals" in x for x in back.health().reasons)


def test_a_form_c_hyperparameter_law_predicts_at_c():
    from lab.fit import FitError
    from lab.fit.hparams import fit_hparams, load_hparams, predict_hparams
    from test_fit_hparams import synthetic_grid

    r = fit_hparams(load_hparams(synthetic_grid(), form="C"), form="C", bootstrap=0)
    b, lr = r.predict(C=1e21)
    assert (b, lr) == pytest.approx(predict_hparams(r.params, "C", C=1e21))
    back = FitResult.from_json(json.loads(r.dumps()))
    assert back.predict(C=1e21) == pytest.approx((b, lr))
    with pytest.raises(FitError, match="form C"):
        r.predict(N=1e6, D=1e8)


def test_a_loss_law_refuses_c(pts):
    from lab.fit import FitError

    r = approach3(pts, bootstrap=0)
    with pytest.raises(FitError, match="loss_at"):
        r.predict(C=1e15)
