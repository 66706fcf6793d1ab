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
# # Hyperparameters: batch size and peak learning rate
#
# A batch x LR sweep (a study's stage a, or any sweep with several (batch, LR) settings per size and
# budget) and the laws fitted to it: B_opt(D) = B_coef D^B_D_exp and lr_opt(N, D) = lr_coef
# N^lr_N_exp D^lr_D_exp, fitted to each cell's near-optimal runs (form ND, as stage a fits them; the
# form of DeepSeek LLM, arXiv:2401.02954, and Step Law, arXiv:2503.04715, in N and D). The fit comes
# from `lab.report.fits.hparam_fit`, as in `python -m lab.report`. B is the batch in tokens.

# %% tags=["parameters"]
STUDY = "runs/study"   # a study (python -m lab.study) or a batch x LR sweep folder; relative: to the repo root
BOOTSTRAP = 200        # bootstrap resamples (the 95% intervals); fewer is faster
SEED = 0

# %%

import pandas as pd

from lab.fit.engine.result import FitResult
from lab.plots import plot_hparam_heatmaps, plot_hparam_laws
from lab.report.fits import hparam_fit
from lab.report.notebook import open_folder

pd.options.display.float_format = "{:.4g}".format
pd.options.display.max_colwidth = None
src = open_folder(STUDY)

# %%
grid = src.sweeps.get("hparams")
fit = hparam_fit(grid, BOOTSTRAP, SEED) if grid else None
res = fit.value if fit is not None and fit.ok else None
if grid is None:
    print(f"no batch x LR sweep in {src.path} (a sweep needs several (batch, LR) settings at one size and budget)")
elif res is None:
    print(f"no batch/LR laws: {fit.error}")
else:
    d = res.diagnostics
    print(f"fitted on {d.get('n_points')} points (runs and their cooldown branches) in {d.get('n_cells')} cells (size x budget) of {', '.join(grid)}")
    for w in d.get("edge_warnings", []):
        print("grid edge:", w)

# %% [markdown]
# ## Loss over (batch, peak LR), one panel per cell
#
# Each panel is one model size and budget. Ringed runs are near-optimal (within the band of the
# cell's best loss that the laws are fitted to), the star is the best run. Look for a bowl with its
# floor inside the grid: `EDGE` marks a best run on the grid's edge, where the optimum may lie outside.

# %%
if res is not None:
    plot_hparam_heatmaps(res);

# %% [markdown]
# ## The fitted laws beside published ones
#
# B_opt and lr_opt against compute with their 95% bands out to the fit's target, each cell's best run
# as a point, and the laws of DeepSeek LLM (2024) and Step Law (2025) for comparison (their own N and C
# conventions, so compare slopes first). A law in N and D is drawn along the cells' median D/N (the
# legend says which; C = 6ND), so cells at other D/N need not sit on its line; the table at the end
# evaluates it at the study's own N and D. A band that fans out quickly beyond the grid is an exponent the grid does not pin down.

# %%
if res is not None:
    plot_hparam_laws(res);

# %% [markdown]
# ## The fit: parameters, intervals, health

# %%
if res is not None:
    display(res)

# %% [markdown]
# ## As the study resolved it
#
# A study does not take the free fit as it is: stage a holds an exponent at 0 when its interval
# contains 0 and refits the rest (the `resolved` notes), and the recipe uses that law. Below,
# both laws evaluated (`res.predict(N, D)` gives (B_opt, lr_opt)) at the study's target size.

# %%
st = src.stage("hparams")
if src.kind != "study":
    print(f"{src.path} is not a study: no resolved law")
elif not st.get("law"):
    print(f"stage hparams: {st.get('status') or 'not run'}" + (f" ({st['error']})" if st.get("error") else "")
          + ": no resolved law")
else:
    for note in st.get("resolved") or ["nothing resolved: the free fit is the study's law"]:
        print("resolved:", note)
    law = FitResult.load(st["law"])
    at = st.get("predictions") or {}
    N, D = at.get("N"), at.get("D")
    laws = {"this notebook's fit": res, "the study's law": law} if res is not None else {"the study's law": law}
    rows = {}
    for name, r in laws.items():
        row = dict(r.params)
        if N and D:
            row["B_opt (tokens)"], row["lr_opt"] = r.predict(N, D)
        rows[name] = row
    if N and D:
        print(f"at the study's target: N = {N:.4g} non-embedding params, D = {D:.4g} tokens")
    display(pd.DataFrame.from_dict(rows, orient="index"))
    if st.get("health"):
        print(f"the study's law: health {st['health'].get('verdict')}; " + "; ".join(st["health"].get("reasons", [])))
