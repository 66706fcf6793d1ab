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
# # Loss laws: from the ladder to the target
#
# What a loss-law ladder (a study's stage c, or any IsoFLOP sweep) says about the compute-optimal
# model at the target compute: IsoFLOP profiles, loss-vs-compute frontiers, Chinchilla approaches 1-3
# side by side (Hoffmann et al. 2022, arXiv:2203.15556), Kaplan's L(C) and L(N, D) (arXiv:2001.08361),
# each fit's health verdict and whether the approaches agree.
#
# Every fit comes from `lab.report.fits.loss_fits`, the code behind `python -m lab.report`, so this
# notebook and the HTML report show the same numbers. N counts non-embedding parameters, D training
# tokens, C training FLOPs as `lab.counting` counts them, loss is validation nats/token.

# %% tags=["parameters"]
STUDY = "runs/study"   # a study (python -m lab.study), a sweep folder or python -m lab.demo's; relative: to the repo root
TARGET_FLOPS = None    # C (FLOPs) to predict at; None: the study's target (a sweep: 10x its largest budget)
BOOTSTRAP = 200        # bootstrap resamples per fit (the 95% intervals); fewer is faster
SEED = 0

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lab.fit.engine.html import interval_cell
from lab.plots import plot_frontier, plot_isoflops, plot_optimal
from lab.report.build import target_of
from lab.report.fits import loss_fits
from lab.report.notebook import open_folder
from lab.report.sources import provenance
from lab.results import load_runs

pd.options.display.float_format = "{:.4g}".format
pd.options.display.max_colwidth = None  # verdicts' reasons in full
src = open_folder(STUDY)

# %% [markdown]
# ## The fits
#
# Approaches 1-3 and Kaplan's two laws on the ladder's completed runs (a WSD run's cooldown branches
# count as finished runs). A fit that cannot be made says why here; the cells below show the rest.

# %%
ladder = src.sweeps.get("loss")
lf = loss_fits(ladder, TARGET_FLOPS or target_of(src), BOOTSTRAP, SEED) if ladder else None
fits = lf.ok() if lf else {}
if lf is None:
    print(f"no loss-law ladder in {src.path}: nothing below can be shown")
else:
    for name, a in lf.fits.items():
        if not a.ok:
            print(f"{name} not fitted: {a.error}")
    C_t = lf.target_flops
    print(f"{len(fits)} of {len(lf.fits)} fits made on {', '.join(ladder)}"
          + (f"; target C = {C_t:.3g} FLOPs" if C_t else ""))
    prov = provenance(ladder)
    bad = prov[prov["status"] != "completed"] if len(prov) else prov
    if len(bad):
        print(f"{len(bad)} run(s) not completed, left out of every fit:")
        display(bad[[c for c in ("sweep", "run", "status", "error") if c in bad.columns]])

# %% [markdown]
# ## IsoFLOP profiles (approach 2)
#
# Loss against N at each budget, one parabola in ln N per budget, its minimum marked. Look for an
# interior minimum in every profile (sizes on both sides of it): a profile whose minimum sits at its
# smallest or largest size does not locate N_opt, and a flat one locates it loosely.

# %%
if "approach2" in fits:
    plot_isoflops(fits["approach2"]);
elif lf is not None:
    print("no IsoFLOP profiles: approach 2 was not fitted")

# %% [markdown]
# ## Loss vs compute
#
# Each fit's frontier through the runs, extrapolated to the target with its 95% band (the diamond
# is the prediction). The band should be narrow at the target, and the laws should land close to
# one another there; a frontier that bends away from the largest budgets is extrapolating a misfit.

# %%
with_frontier = [name for name in ("approach3", "approach2", "approach1", "kaplan_C", "kaplan_ND") if name in fits]
if with_frontier:
    ncols = min(3, len(with_frontier))
    nrows = math.ceil(len(with_frontier) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.0 * nrows), squeeze=False, layout="constrained")
    for ax, name in zip(axes.ravel(), with_frontier):
        plot_frontier(fits[name], ax=ax)
    for ax in axes.ravel()[len(with_frontier):]:
        ax.set_axis_off()
elif lf is not None:
    print("no frontier: no loss law was fitted")

# %% [markdown]
# ## Approaches 1-3 side by side
#
# N_opt, D_opt and the loss each approach predicts at the target, with 95% bootstrap intervals and
# the fit's health. Then N_opt(C) and D_opt(C) against published laws (which count C = 6ND and N
# their own way, so read them for slope rather than offset). Look for overlapping intervals: the
# approaches answer the same question three ways, and a factor between them is the real uncertainty.

# %%
rows = {}
for name in ("approach1", "approach2", "approach3"):
    if name not in fits:
        continue
    r, v = fits[name], lf.health.get(name)
    p = r.predictions or {}
    rows[r.law] = {"N_opt": p.get("N_opt"), "N_opt 95%": interval_cell(p.get("N_opt_interval")),
                   "D_opt": p.get("D_opt"), "D_opt 95%": interval_cell(p.get("D_opt_interval")),
                   "tokens/param": p.get("tokens_per_param"), "loss": p.get("loss"),
                   "loss 95%": interval_cell(p.get("loss_interval")), "health": v.verdict if v else "-"}
if rows:
    print(f"at C = {lf.target_flops:.3g} FLOPs")
    display(pd.DataFrame.from_dict(rows, orient="index"))
elif lf is not None:
    print("no Chinchilla approach was fitted")

# %%
chinchilla = [fits[k] for k in ("approach1", "approach2", "approach3") if k in fits]
if chinchilla:
    plot_optimal(chinchilla);

# %% [markdown]
# ## Health and agreement
#
# Each fit's verdict (`ok`, `weak`, `ill-posed`) with the failed checks and what would fix them:
# interval widths at the target, parameter spans, and a hold-out test (the largest budget predicted
# from the rest). The agreement verdict compares approaches 1-3 at the target; `weak` or worse
# means the recipe's N should not be trusted to better than that factor.

# %%
if lf is not None and lf.health:
    display(pd.DataFrame({name: {"verdict": v.verdict, "reasons": "; ".join(v.reasons) or "-",
                                 "fixes": "; ".join(v.fixes) or "-"}
                          for name, v in lf.health.items() if v is not None}).T)
if lf is not None and lf.agreement is not None:
    print("approaches 1-3 at the target:")
    display(lf.agreement)
elif lf is not None:
    print("no agreement verdict: fewer than two approaches fitted")

# %% [markdown]
# ## Kaplan's laws
#
# L(C), a power law in compute through the frontier, and L(N, D) = [(N_c/N)^(alpha_N/alpha_D) +
# D_c/D]^alpha_D. Neither has an irreducible loss, so beyond the ladder they fall faster than a
# Chinchilla law; a large gap to approach 3 at the target says how much the floor matters there.

# %%
for name in ("kaplan_C", "kaplan_ND"):
    if name in fits:
        display(fits[name])
    elif lf is not None and name in lf.fits:
        print(f"{name} not fitted: {lf.fits[name].error}")

# %% [markdown]
# ## Evaluating the laws: L*(C) from the smallest budget to the target
#
# A fit result evaluates its law: `res.loss_at(C)` is the compute-optimal loss L*(C) and
# `res.optimum(C)` the allocation (N_opt, D_opt, L*) under the data's own C convention. The rows run
# from the ladder's smallest budget to the target; the laws should agree inside the ladder and
# the table shows how far apart they drift outside it.

# %%
main = fits.get("approach3") or fits.get("approach2")
if main is not None and lf.target_flops:
    runs = load_runs(*ladder)
    C_lo = float(runs.loc[runs["status"] == "completed", "flops"].min())
    Cs = np.geomspace(C_lo, lf.target_flops, 6)
    N_opt, D_opt, L_opt = main.optimum(Cs)
    table = pd.DataFrame({"C (FLOPs)": Cs, f"N_opt ({main.law})": N_opt, f"D_opt ({main.law})": D_opt})
    for r in fits.values():  # every law here gives L*(C), Kaplan's L(C) directly
        table[f"L* {r.law}"] = r.loss_at(Cs)
    display(table)
    print(f"{main.law} at the target: L* = {main.loss_at(lf.target_flops):.4f} nats/token, "
          f"its prediction {main.predictions['loss']:.4f} {interval_cell(main.predictions.get('loss_interval'))}")
elif lf is not None:
    print("no law to evaluate: neither approach 3 nor approach 2 was fitted")

# %% [markdown]
# ## Every fit in full
#
# Parameters with intervals, predictions at the target, points used and dropped, health.

# %%
for name in ("approach3", "approach2", "approach1"):
    if name in fits:
        display(fits[name])
