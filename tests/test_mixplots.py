"""Mixing-law plots on a small synthetic sweep with a known law (fast: one fit of each method)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lab.fit.mixing.law import MixData, fit_mixing_law, target_weights  # noqa: E402
from lab.fit.mixing.optimize import make_box, optimize  # noqa: E402
from lab.plots.mixing import default_pairs, plot_optimum, plot_pred_vs_actual, plot_slices, save_mixing_plots  # noqa: E402
from lab.fit.mixing.regression import fit_regression  # noqa: E402

DOMAINS = ["web", "code", "books"]
VAL = ["val_web", "val_code"]
C = np.array([2.0, 1.2])
LOG_K = np.log([1.0, 1.5])
T = np.array([[-1.5, 0.5, 1.0], [0.8, -2.0, 1.2]])   # (K, M)


def _law(R: np.ndarray) -> np.ndarray:
    return C[None, :] + np.exp(LOG_K[None, :] + R @ T.T)


def _data(n: int, seed: int) -> MixData:
    rng = np.random.default_rng(seed)
    R = rng.dirichlet(np.ones(len(DOMAINS)), size=n)
    L = _law(R) * (1 + 0.003 * rng.standard_normal((n, len(VAL))))
    return MixData(list(DOMAINS), R, list(VAL), L, [f"run{i}" for i in range(n)])


@pytest.fixture(scope="module")
def fitted():
    data = _data(30, 0)
    data.L[3, 1] = np.nan                      # a domain not evaluated for one run
    models = {"law": fit_mixing_law(data, bootstrap=20), "regression": fit_regression(data, iterations=50, cv_folds=5)}
    w = target_weights(None, data.val_domains)
    box = make_box(data.domains)
    opts = {m: optimize(mod, w, box, natural={"web": 0.6, "code": 0.3, "books": 0.1}, n_samples=2000)
            for m, mod in models.items()}
    return data, models, opts


def test_save_mixing_plots(fitted, tmp_path):
    data, models, opts = fitted
    held = _data(4, 1)
    heldout = (held, {m: mod.predict(held.R) for m, mod in models.items()})
    written = save_mixing_plots(data, models, opts, tmp_path / "plots", heldout=heldout)
    stems = ["pred_vs_actual", "slices_law", "slices_regression", "optimum_law", "optimum_regression"]
    for stem in stems:
        for ext in ("png", "svg"):
            p = tmp_path / "plots" / f"{stem}.{ext}"
            assert p in written
            assert p.exists() and p.stat().st_size > 1000, p
    assert len(written) == 2 * len(stems)
    assert not plt.get_fignums()               # every figure closed


def test_slices_one_line_per_validation_domain(fitted):
    data, models, opts = fitted
    law = models["law"]
    base = opts["law"]["mixture"]
    fig, ax = plt.subplots()
    plot_slices(law, base, pairs=[("web", "code")], axes=ax)
    lines = ax.get_lines()
    assert len(lines) == len(data.val_domains)
    assert [ln.get_label() for ln in lines] == data.val_domains
    # the slice keeps the other shares: x runs over [0, base_web + base_code]
    x = lines[0].get_xdata()
    assert x[0] == 0 and x[-1] == pytest.approx(base["web"] + base["code"])
    # the law's curve is the law at those mixtures
    R = np.column_stack([x, base["web"] + base["code"] - x, np.full_like(x, base["books"])])
    assert np.allclose(lines[1].get_ydata(), law.predict(R)[:, 1])
    assert ax.collections                      # bootstrap bands (and the base points)
    ax.cla()
    plot_slices(law, base, pairs=[(0, 2)], axes=ax, weights="uniform")
    assert len(ax.get_lines()) == len(data.val_domains) + 1   # plus the weighted target
    ax.cla()
    base = {"web": 0.2, "code": 0.4, "books": 0.4}
    plot_slices(law, base, pairs=[("code", "books")], axes=ax, box={"books": [0.0, 0.3]})
    assert len(ax.get_lines()) == len(data.val_domains)
    spans = [p for p in ax.patches if p.get_label() == "outside constraints"]
    assert len(spans) == 1                     # books <= 0.3 <=> code >= 0.5: [0, 0.5] greyed
    assert spans[0].get_window_extent().width > 0
    plt.close(fig)


def test_default_pairs_and_single_panels(fitted):
    data, models, opts = fitted
    assert default_pairs(np.array([0.5, 0.3, 0.2])) == [(0, 1), (0, 2), (1, 2)]
    assert default_pairs(np.array([0.1, 0.9])) == [(1, 0)]
    assert default_pairs(np.array([0.4, 0.3, 0.2, 0.1])) == [(0, 1), (0, 2), (0, 3)]
    axes = plot_pred_vs_actual(data, models)
    assert len(axes[0].collections) == len(models)          # one scatter per model
    assert "held-out MAE" in axes[0].get_legend().get_texts()[0].get_text()
    plt.close(axes[0].figure)
    ax = plot_optimum(opts["regression"])
    assert "gain vs uniform" in ax.get_title() and "gain vs natural" in ax.get_title()
    plt.close(ax.figure)
    with pytest.raises(ValueError):
        plot_slices(models["regression"], {"web": 0.5, "code": 0.5, "books": 0.5})
