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
# # The recipe and its back-test
#
# What the fits recommend at the target compute (the recipe: shape, N, D, batch, peak LR, mixture and
# the predicted loss with its 95% interval) and, once the full-size run has trained, how close it
# came: the achieved loss overall and per validation domain against the interval, the error beside
# the interval's half-width and the seed-to-seed floor. A study's recipe is read from its folder
# (stage d); for a plain sweep the notebook builds the recipe `python -m lab.recipe` would write
# (`lab.report.build.recipe_of`), which has no back-test.

# %% tags=["parameters"]
STUDY = "runs/study"   # a study (python -m lab.study), python -m lab.demo's folder or a loss ladder; relative: to the repo root
BOOTSTRAP = 200        # bootstrap resamples when a sweep's recipe is built here; fewer is faster
SEED = 0

# %%

import pandas as pd

from lab.fit.engine.html import interval_cell
from lab.plots import plot_backtest
from lab.report.build import recipe_of
from lab.report.notebook import open_folder

pd.options.display.float_format = "{:.4g}".format
pd.options.display.max_colwidth = None
src = open_folder(STUDY)

# %% [markdown]
# ## The study at a glance
#
# Each stage's status, wall time, runs and compute, and its health verdict (from `summary.json`,
# stage g). A `weak` verdict upstream carries into the recipe's interval.

# %%
if src.summary:
    doc = src.summary
    print(f"study {doc.get('study')} (seed {doc.get('seed')}), target C = {doc.get('target_flops', 0):.3g} FLOPs, "
          f"{(doc.get('total_wall_s') or 0) / 60:.1f} min in all")
    display(pd.DataFrame({name: {"status": v.get("status"), "wall (min)": (v.get("wall_s") or 0) / 60,
                                 "runs": v.get("runs"), "failed": v.get("failed"), "FLOPs": v.get("flops"),
                                 "health": v.get("verdict") or "-"}
                          for name, v in (doc.get("stages") or {}).items()}).T)
else:
    print("no study summary: " + ("stage g has not run" if src.kind == "study" else f"{src.path} is not a study"))

# %% [markdown]
# ## The recipe
#
# The model the fits recommend at the target and how to train it. `from` says where each knob
# came from: a fitted law, or a default when its sweep did not run. N is the chosen shape's
# non-embedding count, beside the law's N_opt (a shape rounds it); D = tokens, and the predicted
# loss is the loss law's at that N and D, with its 95% interval.

# %%
recipe, why = recipe_of(src, BOOTSTRAP, SEED) if src.kind != "empty" else (None, f"nothing in {src.path} to build one from")
if recipe is None:
    print(f"no recipe: {why}" if not why.startswith("no recipe") else why)
else:
    c, m, t, p, d = recipe["counts"], recipe["model"], recipe["train"], recipe["prediction"], recipe["data"]
    laws = recipe.get("laws") or {}
    fitted = {k: (laws.get(k) or {}).get("fitted") for k in ("loss", "batch_size", "lr", "mixture")}
    mix = d["mixture"] if isinstance(d["mixture"], str) else ", ".join(f"{k} {v:.3f}" for k, v in d["mixture"].items())
    rows = [("target C (FLOPs)", f"{c['flops']:.3g}", ""),
            ("shape", (f"{m['num_layers']} layers, d_model {m['d_model']}, heads {m['num_heads']}/{m['num_kv_heads']}, "
                       f"d_ff {m['d_ff']}"), ""),
            ("N (non-embedding params)", f"{c['params']:,}", f"law's N_opt {c.get('N_opt_law') or float('nan'):.4g}"),
            ("D (tokens)", f"{c['tokens']:.4g}", f"{c['tokens_per_param']:.0f} tokens/param"),
            ("batch", f"{t['batch_tokens']:,} tokens", "fitted" if fitted["batch_size"] else "not fitted"),
            ("peak LR, schedule", f"{t['lr']:.3g}, {t['schedule']}", "fitted" if fitted["lr"] else "not fitted"),
            ("mixture", mix, "fitted" if fitted["mixture"] else "not fitted"),
            ("predicted loss (nats/token)", f"{p['loss_val']:.4f} {interval_cell(p.get('loss_val_interval'))}",
             p.get("law") or "")]
    display(pd.DataFrame(rows, columns=["", "value", "from"]).set_index(""))
    health = (laws.get("loss") or {}).get("health")
    if health:
        print(f"loss law health: {health.get('verdict')}" + "".join(f"\n  {r}" for r in health.get("reasons", [])))
    doms = p.get("domains") or {}
    if doms:
        display(pd.DataFrame({k: {"predicted loss": v["loss_val"], "95%": interval_cell(v.get("loss_val_interval"))}
                              for k, v in doms.items()}).T)
    for note in recipe.get("notes") or []:
        print("note:", note)

# %% [markdown]
# ## The back-test
#
# Each row (overall, then each validation domain) shows the recipe's 95% interval as a bar and the
# achieved loss of every seed of the full-size run as dots (the star: their mean), all in % of the
# prediction, so rows with different losses share one axis. Look for the star inside the bar in every
# row; a miss on one domain only points at the mixture, a miss overall at the loss law.

# %%
bts = list(src.backtests.values())
if not bts:
    why = {"study": "the full-size run has not finished (study stages e-f)", "demo": "the full-size run has not finished",
           "sweep": "a sweep has none; train the recipe at full size (python -m lab.train recipe=...)"}
    print("no back-test:", why.get(src.kind, "nothing to back-test"))
else:
    plot_backtest(bts[0], seeds=bts[1:]);

# %% [markdown]
# ## The error beside the interval and the seed floor
#
# The prediction is of the expected loss, so it is compared with the seeds' mean. The error is the
# prediction's, (predicted - achieved) / achieved, so its sign is the opposite of the figure's
# (achieved relative to the prediction). It should be inside the 95% half-width; the seed floor (the
# runs' standard deviation across seeds) is the smallest error a prediction can be judged at, so an
# error below it is as good as exact.

# %%
st = src.stage("backtest")
if st.get("status") == "done":
    fl = st.get("floor") or {}
    display(pd.DataFrame([{"predicted": st.get("predicted"), "achieved (seed mean)": st.get("achieved"),
                           "prediction error vs seed mean": f"{st.get('rel_error_pct', float('nan')):+.2f}%",
                           "95% half-width": f"{st.get('half_width_pct', float('nan')):.2f}%",
                           "covered": st.get("covered"),
                           "seed floor (std)": "-" if fl.get("std_pct") is None else f"{fl['std_pct']:.2f}%",
                           "seeds": fl.get("seeds")}], index=["overall"]))
elif st.get("status"):  # running or failed (a stage not run is said above)
    print(f"stage backtest: {st.get('status') or 'not run'}" + (f" ({st['error']})" if st.get("error") else ""))
if bts:
    rows = {}
    for name, r in [("overall", bts[0]["overall"])] + sorted(bts[0]["domains"].items()):
        rows[name] = {"predicted": r["predicted"], "95%": interval_cell(r["interval"]), "achieved": r["achieved"],
                      "prediction error": f"{r['rel_error_pct']:+.2f}%", "covered": r["covered"]}
    print(f"first seed ({next(iter(src.backtests))}), per domain:")
    display(pd.DataFrame(rows).T)
