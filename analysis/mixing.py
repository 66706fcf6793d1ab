# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Data mixture: the mixing law and its optimum
#
# A mixture sweep (a study's stage b, or any sweep of several mixtures) and the data mixing law
# fitted to it (Ye et al. 2024, arXiv:2403.16952: per validation domain, L_i(r) = c_i + k_i exp(sum_j
# t_ij r_j)), beside a regression baseline (RegMix, arXiv:2407.01492). With several sizes each
# mixture's loss is first predicted at the target size (nested), so the optimum is the target's.
# The fits come from `lab.report.fits.mixing_fits`, as in `python -m lab.report`; r_j is the share
# of training tokens from domain j, losses are validation nats/token.

# %% tags=["parameters"]
STUDY = "runs/study"   # a study (python -m lab.study) or a mixture sweep folder; relative: to the repo root
BOOTSTRAP = 200        # bootstrap resamples (95% intervals); the mixing law uses at most 100, as the report does
SEED = 0

# %%

import pandas as pd

from lab.fit.engine.html import interval_cell
from lab.plots import plot_optimum, plot_pred_vs_actual, plot_slices
from lab.report.fits import mixing_fits
from lab.report.notebook import open_folder

pd.options.display.float_format = "{:.4g}".format
pd.options.display.max_colwidth = None
src = open_folder(STUDY)

# %%
sweep = src.sweeps.get("mixture")
mf = mixing_fits(sweep, src.stage("mixture").get("target"), min(BOOTSTRAP, 100), SEED) if sweep else None
law = mf.models.get("law") if mf is not None else None
if sweep is None:
    print(f"no mixture sweep in {src.path} (a sweep needs more than two mixtures)")
else:
    for e in mf.errors:
        print("not fitted:", e)
    if mf.models:
        print(f"{mf.how}; {len(mf.fit_data)} rows fitted of {len(mf.data)} runs; models: {', '.join(mf.models)}")

# %% [markdown]
# ## Predicted vs actual, per validation domain
#
# Each run's loss as predicted by a fit that did not see its mixture (held-out), for the law and the
# regression baseline, against the loss it reached. Points on the dashed y = x line are predicted
# well; the legend's held-out MAE is the number to compare between the two models. A law that does
# no better than the baseline has not earned its optimum.

# %%
if mf is not None and mf.models:
    plot_pred_vs_actual(mf.fit_data, mf.models);

# %% [markdown]
# ## Two-domain slices through the optimum
#
# Predicted loss as share moves from one domain to another with the rest held at the optimum, one
# line per validation domain and the target (their mean) in black, with 95% bands. A flat target
# curve means the optimum is loosely pinned in that direction (and little is lost there); a sharp
# one that the share matters.

# %%
if law is not None and mf.optimum is not None:
    plot_slices(law, mf.optimum["mixture"], weights="uniform", base_label="optimum");
elif mf is not None:
    print("no slices: the law or its optimum is missing (see above)")

# %% [markdown]
# ## The optimum and the choice
#
# The optimal share of each domain (whiskers: where each bootstrap draw's own optimum lies) beside
# the uniform and natural mixtures; the search stays inside the fitted mixtures' hull. The optimum
# is kept only when its predicted gain over uniform has an interval that excludes 0; otherwise the
# uniform mixture stays. Wide whiskers are shares the sweep does not determine.

# %%
if mf is not None and mf.optimum is not None:
    plot_optimum(mf.optimum);
    opt = mf.optimum
    iv = opt.get("mixture_interval") or {}
    rows = {"optimum": {d: f"{v:.3f} {interval_cell(iv.get(d))}" for d, v in opt["mixture"].items()}
            | {"predicted target": f"{opt['target']:.4f} {interval_cell(opt.get('target_interval'))}"}}
    for name in ("uniform", "natural"):
        if name in opt:
            g = opt[name]
            rows[name] = {d: f"{v:.3f}" for d, v in g["mixture"].items()} | {
                "predicted target": f"{g['target']:.4f}", "optimum's gain": f"{g['gain']:+.4f} "
                                                                            f"{interval_cell(g.get('gain_interval'))}"}
    table = pd.DataFrame(rows).T.fillna("")
    display(table)
if mf is not None and mf.choice:
    print(f"mixture to train on: {mf.choice['chosen']}: {mf.choice['why']}")
if mf is not None and mf.health is not None:
    print("mixing law health:")
    display(mf.health)

# %% [markdown]
# ## As the study chose it
#
# Stage b's own record: the mixture the rest of the study trained on (the loss ladder and the
# recipe), and why.

# %%
st = src.stage("mixture")
if src.kind != "study":
    print(f"{src.path} is not a study: no stage b record")
elif st.get("status") != "done":
    print(f"stage mixture: {st.get('status') or 'not run'}" + (f" ({st['error']})" if st.get("error") else ""))
else:
    mix = st.get("mixture")
    print("the study trained on:", mix if isinstance(mix, str) else ", ".join(f"{d} {v:.3f}" for d, v in mix.items()))
    for note in st.get("notes") or []:
        print("note:", note)
