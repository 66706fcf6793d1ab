"""The report's sections, one function each: what a researcher looks at after a sweep or a study.

Each takes a :class:`~lab.report.sources.Source` and the fits of :mod:`lab.report.fits`, and returns
a :class:`~lab.report.page.Section`; what cannot be shown is said in the section, never raised.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt

from lab.fit.engine.html import fmt, interval_cell, result_table, verdict_html
from lab.report.fits import Attempt, LossFits, MixingFits
from lab.report.page import Raw, Section, esc, figure, table
from lab.report.sources import ROLE_TITLES, Source, provenance


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _pct(v: Any, sign: str = "+") -> str:
    """``+1.23%``, or '-' for a missing or non-finite value (a null in a saved JSON)."""
    x = _num(v)
    return "-" if x is None else f"{x:{sign}.2f}%"


def _g(v: Any, spec: str = ".3g") -> str:
    x = _num(v)
    return "-" if x is None else format(x, spec)


def overview(sources: list[Source]) -> Section:
    sec = Section("Overview")
    rows = [[s.label, s.kind, str(s.path), ", ".join(f"{ROLE_TITLES[r]}" for r in s.sweeps) or "-"] for s in sources]
    sec.add(table(["source", "kind", "folder", "holds"], rows))
    for s in sources:
        for p in s.problems:
            sec.lack(f"{s.label}: {p}")
        if s.summary:
            sec.add(_study_table(s))
    return sec


def _study_table(s: Source) -> str:
    doc = s.summary or {}
    rows = [[name, v.get("status") or "-", (v.get("wall_s") or 0) / 60, v.get("runs"), v.get("flops"),
             Raw(verdict_html({"verdict": v["verdict"]})) if v.get("verdict") else "-"]
            for name, v in (doc.get("stages") or {}).items()]
    head = (f"<h3>Study {esc(doc.get('study'))} (seed {esc(doc.get('seed'))}), target C = "
            f"{_g(doc.get('target_flops'))} FLOPs, {(doc.get('total_wall_s') or 0) / 60:.1f} min</h3>")
    return head + table(["stage", "status", "wall (min)", "runs", "FLOPs", "health"], rows)


def hparams_section(src: Source, fit: Attempt) -> Section:
    from lab.plots.hparams import plot_hparam_heatmaps, plot_hparam_laws

    sec = Section(f"Hyperparameters: {src.label}")
    if not fit.ok:
        sec.lack(f"no batch/LR laws: {fit.error}")
        return sec
    r = fit.value
    sec.add(figure(lambda: plot_hparam_heatmaps(r), "Loss over (batch, peak LR) per cell (size x budget); "
                   "near-optimal runs ringed, the best starred, EDGE where the best sits on the grid's edge.",
                   sec.missing))
    sec.add(figure(lambda: plot_hparam_laws(r), "Fitted B_opt and lr_opt (95% bands) beside DeepSeek LLM "
                   "(2024) and Step Law (2025); points: each cell's best run.", sec.missing))
    for w in r.diagnostics.get("edge_warnings", []):
        sec.lack(f"grid edge: {w}")
    st = src.stage("hparams")
    if src.kind == "study" and st.get("params"):
        sec.add(_resolved_law(st))
        sec.add("<h3>The full fit (every exponent free)</h3>")
    sec.add(result_table(r))
    return sec


def _resolved_law(st: dict[str, Any]) -> str:
    """Stage a's law as the later stages used it: exponents whose interval held 0 fixed at 0."""
    iv = st.get("intervals") or {}
    rows = [[k, v, Raw(interval_cell(iv.get(k)))] for k, v in st["params"].items()]
    notes = "".join(f"<li>{esc(n)}</li>" for n in st.get("resolved") or [])
    return ("<h3>The law stages b-d used</h3>" + table(["parameter", "value", "95% interval"], rows)
            + f"<p>Health: {verdict_html(st.get('health') or {})}</p>" + (f"<ul>{notes}</ul>" if notes else ""))


def mixing_section(src: Source, mf: MixingFits) -> Section:
    from lab.plots.mixing import default_pairs, panel_grid, plot_optimum, plot_pred_vs_actual, plot_slices

    sec = Section(f"Mixture: {src.label}")
    for e in mf.errors:
        sec.lack(e)
    if not mf.models:
        return sec
    sec.add(f"<p>{esc(mf.how)}; {len(mf.fit_data)} runs fitted of {len(mf.data)}.</p>")

    def pva():
        fig, axes = panel_grid(len(mf.data.val_domains))
        plot_pred_vs_actual(mf.fit_data, mf.models, None, axes)
        return fig
    sec.add(figure(pva, "Predicted vs actual loss per validation domain: each run predicted by a fit that did "
                   "not see its mixture (held-out), for the mixing law and the regression baseline.", sec.missing))
    law = mf.models.get("law")
    if law is not None and mf.optimum is not None:
        base = mf.optimum["mixture"]

        def slices():
            import numpy as np
            arr = np.array([base[d] for d in law.domains])
            pairs = default_pairs(arr)
            fig, axes = panel_grid(len(pairs), ncols=3, size=(4.8, 3.8))
            plot_slices(law, arr, pairs, axes, weights="uniform", base_label="optimum")
            return fig
        sec.add(figure(slices, "Loss along two-domain slices through the law's optimum (95% bands): flat means "
                       "the optimum is loosely pinned in that direction.", sec.missing))
        sec.add(figure(lambda: plot_optimum(mf.optimum), "The optimum inside the fitted mixtures' hull with its "
                       "interval, beside the uniform (and natural) mixtures.", sec.missing))
        if mf.choice:
            sec.add(f"<p><b>Mixture to train on:</b> {esc(mf.choice['chosen'])}: {esc(mf.choice['why'])}</p>")
    if law is not None:
        sec.add(_mixing_constants(law))
    if mf.health is not None:
        sec.add(f"<p>Mixing law's own health (held-out error against a mixture-blind baseline): "
                f"{verdict_html(mf.health)}</p>")
    st = src.stage("mixture")
    if src.kind == "study" and st.get("mixture"):
        mix = st["mixture"] if isinstance(st["mixture"], str) else ", ".join(
            f"{k} {v:.3f}" for k, v in st["mixture"].items())
        sec.add(f"<p><b>Stage b chose:</b> {esc(mix)}. Its verdict (the law and the choice): "
                f"{verdict_html(st.get('health') or {})}</p>")
    return sec


def _mixing_constants(law: Any) -> str:
    """The mixing law's constants per validation domain, L_i(r) = c_i + k_i exp(sum_j t_ij r_j), with
    their bootstrap intervals."""
    est, iv = law.summary(), law.intervals()
    head = ["validation domain", "c", "k"] + [f"t[{d}]" for d in law.domains]
    rows = []
    for v, e in est.items():
        i = iv.get(v) or {}
        cell = lambda x, w: Raw(f"{fmt(x)}<br><small>{interval_cell(w, x)}</small>")  # noqa: E731
        rows.append([v, cell(e["c"], i.get("c")), cell(e["k"], i.get("k"))]
                    + [cell(e["t"][d], (i.get("t") or {}).get(d)) for d in law.domains])
    return ("<h3>Mixing law constants (95% intervals)</h3><p><code>L_i(r) = c_i + k_i exp(sum_j t_ij r_j)</code>, "
            "gauge sum_j t_ij = 0</p><div class='scroll'>" + table(head, rows) + "</div>")


def loss_section(src: Source, lf: LossFits) -> Section:
    from lab.plots.loss import plot_frontier, plot_isoflops, plot_optimal

    sec = Section(f"Loss laws: {src.label}")
    fits = lf.ok()
    for name, a in lf.fits.items():
        if not a.ok:
            sec.lack(f"{name} not fitted: {a.error}")
    if not fits:
        return sec
    if "approach2" in fits:
        sec.add(figure(lambda: plot_isoflops(fits["approach2"]), "IsoFLOP profiles: loss vs N per budget, each "
                       "budget's parabola and its minimum (approach 2).", sec.missing))
    main = fits.get("approach3") or fits.get("approach2")
    if main is not None:
        sec.add(figure(lambda: plot_frontier(main), f"Loss vs compute: the runs and {main.law}'s frontier, "
                       "extrapolated to the target with its 95% band.", sec.missing))
    chin = [r for k, r in fits.items() if k.startswith("approach")]
    if chin:
        sec.add(figure(lambda: plot_optimal(chin), "Compute-optimal N and D: approaches 1-3 (95% bands) beside "
                       "published laws (which count C = 6ND and N their own way).", sec.missing))
    sec.add(_approaches_table(lf))
    if lf.agreement is not None:
        sec.add(f"<p>Approaches 1-3 at the target: {verdict_html(lf.agreement)}</p>")
    for name in ("approach3", "approach2", "approach1", "kaplan_C", "kaplan_ND"):
        if name in fits:
            sec.add(result_table(fits[name], lf.health.get(name)))
    return sec


def _approaches_table(lf: LossFits) -> str:
    rows = []
    for name, r in lf.ok().items():
        p = r.predictions or {}
        v = lf.health.get(name)
        rows.append([r.law, p.get("N_opt"), Raw(interval_cell(p.get("N_opt_interval"), p.get("N_opt"))),
                     p.get("D_opt"), Raw(interval_cell(p.get("D_opt_interval"), p.get("D_opt"))),
                     p.get("loss"), Raw(interval_cell(p.get("loss_interval"), p.get("loss"))),
                     Raw(verdict_html({"verdict": v.verdict}) if v is not None else "-")])
    C = f"{lf.target_flops:.3g}" if lf.target_flops else "the target"
    return (f"<h3>At C = {C} FLOPs</h3>"
            + table(["law", "N_opt", "95% (width)", "D_opt", "95% (width)", "loss", "95% (width)", "health"], rows))


def recipe_section(src: Source, recipe: dict[str, Any] | None, why: str | None) -> Section:
    sec = Section(f"Recipe: {src.label}")
    if recipe is None:
        sec.lack(why or "no recipe")
        return sec
    p, laws = recipe["prediction"], recipe.get("laws") or {}
    fitted = {k: (laws.get(k) or {}).get("fitted") for k in ("loss", "batch_size", "lr", "mixture")}
    rows = _recipe_rows(src, recipe, fitted)
    sec.add(table(["", "value", "from"], rows, cls="key"))
    health = (laws.get("loss") or {}).get("health")
    if health:
        sec.add(f"<p>Loss law health: {verdict_html(health)}</p>")
    doms = p.get("domains") or {}
    if doms:
        sec.add("<h3>Predicted per domain</h3>" + table(["domain", "loss", "95%"], [
            [k, v["loss_val"], Raw(interval_cell(v.get("loss_val_interval"), v["loss_val"]))] for k, v in doms.items()]))
    if recipe.get("notes"):
        sec.add("<h3>Notes</h3><ul>" + "".join(f"<li>{esc(n)}</li>" for n in recipe["notes"]) + "</ul>")
    return sec


def _recipe_rows(src: Source, recipe: dict[str, Any], fitted: dict[str, Any]) -> list[list[Any]]:
    """The recommended run, each number beside the interval of the law it came from (when it has one)."""
    c, m, t, p, d = recipe["counts"], recipe["model"], recipe["train"], recipe["prediction"], recipe["data"]
    laws = recipe.get("laws") or {}
    liv = (laws.get("loss") or {}).get("intervals") or {}
    hp = src.stage("hparams").get("predictions") or {}
    mix = d["mixture"] if isinstance(d["mixture"], str) else ", ".join(f"{k} {v:.3f}" for k, v in d["mixture"].items())
    mix_law = laws.get("mixture") or {}
    mix_iv = ("; optimum's shares: " + ", ".join(f"{k} [{a:.2f}, {b:.2f}]" for k, (a, b) in
                                                  (mix_law.get("mixture_interval") or {}).items())
              if mix_law.get("chosen") == "optimum" and mix_law.get("mixture_interval") else "")
    how = lambda k: "fitted" if fitted[k] else "not fitted (the sweeps' setting)"  # noqa: E731
    return [
        ["target C (FLOPs)", f"{c['flops']:.3g}", ""],
        ["shape", f"{m['num_layers']} layers, d_model {m['d_model']}, heads {m['num_heads']}/{m['num_kv_heads']}, "
                  f"d_ff {m['d_ff']}", "the sweeps' shape rule at N"],
        ["N (non-embedding params)", f"{c['params']:,}",
         f"law's N_opt {_g(c.get('N_opt_law'))} " + interval_cell(liv.get("N_opt"), c.get("N_opt_law"))],
        ["D (tokens)", f"{c['tokens']:.4g} ({c['tokens_per_param']:.0f} tokens/param)",
         f"law's D_opt {_g(c.get('D_opt_law'))} " + interval_cell(liv.get("D_opt"), c.get("D_opt_law"))],
        ["batch", f"{t['batch_tokens']:,} tokens", how("batch_size") + _stage_a_interval(hp, "B_opt")],
        ["peak LR, schedule", f"{t['lr']:.3g}, {t['schedule']}", how("lr") + _stage_a_interval(hp, "lr_opt")],
        ["mixture", mix, how("mixture") + (f": {mix_law['chosen']}" if mix_law.get("chosen") else "") + mix_iv],
        ["predicted loss (nats/token)", f"{p['loss_val']:.4f}",
         interval_cell(p.get("loss_val_interval"), p.get("loss_val")) + f" ({p.get('law')})"],
    ]


def _stage_a_interval(hp: dict[str, Any], key: str) -> str:
    iv = hp.get(f"{key}_interval")
    return f"; stage a's 95% at the prior target {interval_cell(iv, hp.get(key))}" if iv else ""


def backtest_section(src: Source) -> Section:
    from lab.plots.backtest import plot_backtest

    sec = Section(f"Back-test: {src.label}")
    if not src.backtests:
        sec.lack("no back-test: the full-size run has not finished (study stages e-f)")
        return sec
    bts = list(src.backtests.values())
    sec.add(figure(lambda: plot_backtest(bts[0], seeds=bts[1:]), "The recipe's 95% interval (bar) against the "
                   "achieved loss of each seed of the full-size run, overall and per domain, relative to the "
                   "prediction.", sec.missing))
    st = src.stage("backtest")
    if st.get("status") == "done":
        fl = st.get("floor") or {}
        sec.add(table(["error vs seed mean", "95% half-width", "covered", "seed floor (std)", "seeds"],
                      [[_pct(st.get("rel_error_pct")), _pct(st.get("half_width_pct"), ""), str(st.get("covered")),
                        _pct(fl.get("std_pct"), ""), fl.get("seeds")]], cls="key"))
    o = bts[0]["overall"]
    items = [("overall", o)] + sorted((bts[0].get("domains") or {}).items())
    rows = [[k, v["predicted"], Raw(interval_cell(v.get("interval"), v["predicted"])), v["achieved"],
             _pct(v.get("rel_error_pct")), str(v.get("covered"))] for k, v in items]
    sec.add("<h3>First seed, per domain</h3>" + table(["", "predicted", "95% (width)", "achieved",
                                                      "error (predicted / achieved - 1)", "covered"], rows))
    return sec


def _text(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def provenance_section(src: Source, dropped: dict[str, list[dict[str, Any]]]) -> Section:
    sec = Section(f"Provenance: {src.label}")
    dirs = sorted({d for ds in src.sweeps.values() for d in ds})
    if not dirs:
        sec.lack("no sweeps")
        return sec
    prov = provenance(dirs)
    counts = prov.groupby(["sweep", "status"]).size().unstack(fill_value=0) if len(prov) else None
    if counts is not None:
        sec.add("<h3>Runs per sweep</h3>" + table(["sweep"] + list(counts.columns),
                                                  [[i] + [int(x) for x in r] for i, r in counts.iterrows()]))
    bad = prov[prov["status"] != "completed"] if len(prov) else prov
    if len(bad):
        sec.add("<h3>Runs not completed (left out of every fit)</h3>" + table(
            ["sweep", "run", "status", "error"], [[r.sweep, r.run, r.status, _text(getattr(r, "error", None))]
                                                  for r in bad.itertuples()]))
    for fit, rows in dropped.items():
        if rows:
            more = f" (the first 40 of {len(rows)})" if len(rows) > 40 else ""
            sec.add(f"<h3>Dropped by {esc(fit)}{more}</h3>" + table(["run", "reason"], [[d.get("id"), d.get("reason")]
                                                                                        for d in rows[:40]]))
    sec.add("<h3>Sweep folders</h3><ul>" + "".join(f"<li><code>{esc(d)}</code></li>" for d in dirs) + "</ul>")
    return sec


def compare_section(names: tuple[str, str], cmp: Attempt) -> Section:
    from lab.plots.compare import plot_multiplier, plot_profiles_overlay

    sec = Section(f"Comparing ladders: {names[1]} over {names[0]}")
    if not cmp.ok:
        sec.lack(f"no comparison: {cmp.error}")
        return sec
    c = cmp.value
    sec.add(figure(lambda: plot_multiplier(c), f"Effective compute multiplier of {names[1]} over {names[0]}: the "
                   f"compute {names[0]} needs to reach {names[1]}'s loss, per budget and extrapolated to the target "
                   "(95% bootstrap band; above 1: B is better).", sec.missing))
    if getattr(c, "fits", None):
        sec.add(figure(lambda: plot_profiles_overlay(*c.fits, names=names), "Both ladders' IsoFLOP profiles.",
                       sec.missing))
    sec.add(c._repr_html_())
    plt.close("all")
    return sec
