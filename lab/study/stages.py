"""The stages of a study, each a function of the study that returns what it adds to ``study.json``.

a ``hparams``: batch x LR grid at several sizes (WSD, cooldown branches at several budgets) ->
  form-ND laws lr_opt(N, D), B_opt(D); sizes whose best runs sit on the grid's edge get their grid
  widened, or are flagged.
b ``mixture``: axial mixtures at stage a's batch and LR -> the nested mixing law's mixture for
  the target size, inside the runs' hull, share bounds and epoch caps; uniform when the law's
  optimum is not clearly better.
c ``loss``: IsoFLOP profiles from WSD runs with seeds, on that mixture at stage a's batch and LR ->
  Chinchilla approaches 1-3 and their health; the seed spread beside the profiles' depth.
d ``recipe``: shape, N, D from c; batch and LR from a; mixture from b; the health gate.
e ``full``: the recipe's run with several seeds. f ``backtest``: prediction vs outcome and the
seed floor. g ``summary``: the study in one JSON and a few lines.

A stage given existing sweep folders (``inputs``) fits them instead of running its own sweep.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lab.fit.engine.result import to_jsonable
from lab.fit.hparams import predict_hparams, resolved_law
from lab.study.config import StudyConfig
from lab.study.launch import StageInputError, completed_result, run_sweep, train_recipe
from lab.study.state import StudyState


INPUT_FLAGS = ("hparams_sweeps", "mixing_sweeps", "loss_sweeps", "hparams_law", "mixture")


@dataclass
class Study:
    """A study in progress: its settings, folder, record and the inputs a user gave."""

    cfg: StudyConfig
    out: Path
    state: StudyState
    inputs: dict[str, Any] = field(default_factory=dict)
    force: bool = False

    def say(self, msg: str) -> None:
        print(f"[study] {msg}", flush=True)

    def sweep(self, design: str, sub: str, axes: list[str], fixed: dict[str, Any], label: str, stage: str):
        """Run one sweep of ``stage`` into ``<out>/<sub>`` and keep its cost in the record."""
        run = run_sweep(design, self.out / sub, axes, [f"{k}={v}" for k, v in fixed.items()], label,
                        self.state.measured_rate())
        done = self.state.stage(stage).get("sweeps_run", [])
        self.state.record(stage, sweeps_run=[r for r in done if r["sweep_dir"] != run.sweep_dir] + [asdict(run)])
        if run.completed == 0:
            raise RuntimeError(f"{label}: no run completed in {run.sweep_dir} ({run.failed} failed); "
                               f"see python -m lab.results {run.sweep_dir}")
        return run

    def fixed(self, **extra: Any) -> dict[str, Any]:
        """The overrides every sweep of the study shares, with this stage's on top."""
        base = dict(o.split("=", 1) for o in self.cfg.common_overrides())
        return {**base, **{k.replace("__", "."): v for k, v in extra.items()}}

    def need(self, stage: str, key: str, given: str) -> Any:
        """An earlier stage's output, or the input given in its place."""
        if self.inputs.get(given) is not None:
            return self.inputs[given]
        if not self.state.done(stage):
            instead = f", or give --{given.replace('_', '-')}" if given in INPUT_FLAGS else ""
            raise StageInputError(f"this stage needs {key} from stage {stage}: run that stage first{instead}")
        return self.state.stage(stage)[key]


def _list(xs) -> str:
    return "[" + ",".join(repr(float(x)) for x in xs) + "]"


def _mapping(d: dict[str, float]) -> str:
    return "{" + ",".join(f"{k}:{v!r}" for k, v in d.items()) + "}"


# ----------------------------------------------------------------------------------------------
# a: hyperparameters
# ----------------------------------------------------------------------------------------------

def _hparam_axes(sizes: list[int], batches, lrs) -> list[str]:
    return [f"design.size={','.join(str(k) for k in sizes)}",
            f"train.batch_tokens={','.join(str(int(b)) for b in batches)}", f"train.lr={','.join(repr(float(x)) for x in lrs)}"]


def fit_hparam_law(sweeps: list[str], bootstrap: int, seed: int):
    """The form-ND batch and LR laws of these sweeps (cooldown branches included: each is a cell)."""
    from lab.fit import FitError
    from lab.fit.hparams import fit_hparams, load_hparams
    from lab.results import load_runs

    try:
        return fit_hparams(load_hparams(load_runs(*sweeps), form="ND"), form="ND", bootstrap=bootstrap, seed=seed)
    except FitError as e:
        raise StageInputError(f"stage a (hparams) on {', '.join(sweeps)}: {e}") from None


def widened(res, grids: dict[float, tuple[list[int], list[float]]], min_batch: int
            ) -> dict[float, tuple[list[int], list[float]]]:
    """Per model size N (its ``grids`` entry: the batches and LRs it was run at), the new batches and
    LRs past an edge of its grid where at least half of its cells' best runs sit (one cell's best at
    an edge is as likely seed noise; it stays flagged in the fit's health). Batches widen upwards
    only: ``min_batch`` is the floor by choice."""
    out = {}
    for N, (batches, lrs) in grids.items():
        cells = [c for c in res.diagnostics["cells"] if math.isclose(c["N"], N, rel_tol=1e-3)]
        if not cells:
            continue
        bs, ls = sorted(batches), sorted(lrs)
        step = ls[-1] / ls[-2] if len(ls) > 1 else 2.0
        need = max(1, math.ceil(len(cells) / 2))
        at = lambda key, v: sum(1 for c in cells if math.isclose(c[key], v, rel_tol=1e-6))  # noqa: E731
        new_lr = [x for x, n in ((ls[0] / step, at("best_lr", ls[0])), (ls[-1] * step, at("best_lr", ls[-1])))
                  if n >= need and len(ls) > 1]
        new_b = [bs[-1] * 2] if len(bs) > 1 and at("best_B", bs[-1]) >= need and bs[-1] * 2 >= min_batch else []
        if new_lr or new_b:
            out[N] = (sorted(new_b), sorted(new_lr))
    return out


def _size_params(sweeps: list[str]) -> dict[float, int]:
    """N -> design.size index of the runs in these sweeps."""
    from lab.results import load_runs

    df = load_runs(*sweeps)
    df = df[df["status"] == "completed"]
    return {float(n): int(k) for n, k in zip(df["params"], df["design.size"])}


def _widen(s: Study, sweeps: list[str], fixed: dict[str, Any]) -> None:
    """Widen the grid of each size whose best runs sit on an edge, ``widen_rounds`` times."""
    h = s.cfg.hparams
    index = _size_params(sweeps)
    grids = {N: (list(h.batches), list(h.lrs)) for N in index}
    for k in range(h.widen_rounds):
        plan = widened(fit_hparam_law(sweeps, 0, s.cfg.seed), grids, h.min_batch)
        if not plan:
            return
        sub = f"a_hparams_widen{k + 1}"
        for N, (nb, nl) in sorted(plan.items()):
            b0, l0 = grids[N]
            s.say(f"stage a: N={N:.3g}: best runs on the grid's edge; widening: batches {nb or '-'}, LRs {nl or '-'}")
            if nl:
                s.sweep("isoflop_wsd", sub, _hparam_axes([index[N]], b0 + nb, nl), fixed, f"stage a: widen {k + 1}, N={N:.3g} (LR)", "hparams")
            if nb:
                s.sweep("isoflop_wsd", sub, _hparam_axes([index[N]], nb, l0), fixed, f"stage a: widen {k + 1}, N={N:.3g} (batch)", "hparams")
            grids[N] = (b0 + nb, l0 + nl)
        if str(s.out / sub) not in sweeps:
            sweeps.append(str(s.out / sub))


def stage_hparams(s: Study) -> dict[str, Any]:
    h, cfg = s.cfg.hparams, s.cfg
    given = s.inputs.get("hparams_sweeps")
    sweeps = list(given or [])
    if not given:
        fixed = s.fixed(design__sizes=_list(h.sizes), design__budgets=_list(h.budgets), design__spread=h.spread,
                        train__seed=cfg.seed)
        s.sweep("isoflop_wsd", "a_hparams", _hparam_axes(list(range(len(h.sizes))), h.batches, h.lrs), fixed,
                "stage a: batch x LR at each size (WSD branches at each budget)", "hparams")
        sweeps = [str(s.out / "a_hparams")]
        _widen(s, sweeps, fixed)
    res = fit_hparam_law(sweeps, min(cfg.bootstrap, 300), cfg.seed)
    N, D = prior_target(cfg)
    rl = resolved_law(res, min(cfg.bootstrap, 300), cfg.seed, at={"N": N, "D": D}, floor_batch=h.min_batch)
    params, resolved = dict(rl.params), list(rl.notes)
    if params["B_D_exp"] == 0 and round(params["B_coef"]) < h.min_batch:
        resolved.append(f"B_opt {params['B_coef']:.3g} is below the smallest batch considered; taken as "
                        f"{h.min_batch} (HparamStage.min_batch: smaller CPU steps cost more wall time than they save)")
        params["B_coef"] = float(h.min_batch)
    law = s.out / "a_hparams_law.json"
    doc = {**res.to_json(), **params, "fitted_params": res.params, "resolved": resolved,
           "resolved_intervals": rl.intervals, "resolved_health": rl.health}
    law.write_text(json.dumps(to_jsonable(doc), indent=1))
    B_t, lr_t = predict_hparams(params, "ND", N=N, D=D)
    lo, hi = rl.predictions["lr_opt_interval"]
    for note in resolved:
        s.say(f"stage a: {note}")
    s.say(f"stage a: lr_opt = {params['lr_coef']:.3g} N^{params['lr_N_exp']:.3f} D^{params['lr_D_exp']:.3f}, "
          f"B_opt = {params['B_coef']:.3g} D^{params['B_D_exp']:.3f}; at the prior target (N={N:.3g}, D={D:.3g}): "
          f"B_opt {B_t:.0f} tokens, lr_opt {lr_t:.3g} [{lo:.3g}, {hi:.3g}]; health {rl.health['verdict']}"
          + (f" ({'; '.join(rl.health['reasons'])})" if rl.health["reasons"] else ""))
    return {"sweeps": sweeps, "law": str(law), "params": params, "fitted_params": res.params, "resolved": resolved,
            "intervals": rl.intervals, "predictions": {**rl.predictions, "B_opt": B_t, "lr_opt": lr_t},
            "edge_warnings": res.diagnostics["edge_warnings"], "health": rl.health,
            "fitted_health": res.diagnostics["health"]}


# ----------------------------------------------------------------------------------------------
# b: mixture
# ----------------------------------------------------------------------------------------------

def prior_target(cfg: StudyConfig) -> tuple[float, float]:
    """(N, D) of the prior compute-optimal run at the target C: where stage b chooses the mixture,
    before stage c has fitted the loss law."""
    from lab.counting import counts, tokens_for_flops
    from lab.designs import ShapeRule, prior_optimal_params

    rule = ShapeRule(seq_len=cfg.seq_len)
    shape = rule.shape(prior_optimal_params(cfg.target_flops, rule, cfg.tokens_per_param))
    return float(counts(shape)["params"]), float(tokens_for_flops(cfg.target_flops, shape))


def corpus_domains(corpus: str) -> list[str]:
    """The training domains of ``corpus`` (built if missing), as the sweeps order them."""
    from lab.data.build import ensure_corpus
    from lab.io import read_json

    return sorted(read_json(Path(ensure_corpus(corpus)) / "manifest.json")["domains"])


def stage_mixture(s: Study) -> dict[str, Any]:
    from lab.recipe.build import mixture_from
    from lab.recipe.format import RecipeError

    m, cfg = s.cfg.mixture, s.cfg
    law = s.need("hparams", "law", "hparams_law")
    sweeps = list(s.inputs.get("mixing_sweeps") or [])
    if not sweeps:
        n = m.n_mixtures or 1 + 2 * len(corpus_domains(cfg.corpus))
        fixed = s.fixed(design__sizes=_list(m.sizes), design__n_mixtures=n, design__mixtures=m.design,
                        design__alpha=m.alpha, design__seed=cfg.seed, design__tokens_per_param=m.tokens_per_param,
                        design__hparams=law, train__seed=cfg.seed, data__val_weights="uniform")
        axes = [f"design.size=range({len(m.sizes)})", f"design.mixture=range({n})"]
        s.sweep("mixture", "b_mixture", axes, fixed, "stage b: mixtures", "mixture")
        sweeps = [str(s.out / "b_mixture")]
    N, D = prior_target(cfg)
    notes: list[str] = []
    try:
        mixture, mix_law = mixture_from(sweeps, N, D, None, cfg.bootstrap, cfg.seed, notes, m.max_epochs,
                                        m.min_share, m.max_share)
    except RecipeError as e:
        raise StageInputError(f"stage b (mixture) on {', '.join(sweeps)}: {e}") from None
    shares = ", ".join(f"{d}={x:.3f}" for d, x in mixture.items())
    health = mix_law.get("health") or {}
    s.say(f"stage b: mixture for N={N:.3g}, D={D:.3g}: {shares} ({mix_law['how']}; {mix_law['choice']}); held-out MAE "
          f"{mix_law['held_out_mae']:.4f}; health {health.get('verdict')}"
          + (f" ({'; '.join(health.get('reasons', []))}; fix: {'; '.join(health.get('fixes', []))})"
             if health.get("reasons") else ""))
    return {"sweeps": sweeps, "mixture": mixture, "law": {**mix_law, "mixture": mixture}, "target": {"N": N, "D": D},
            "notes": notes, "health": mix_law.get("health")}


# ----------------------------------------------------------------------------------------------
# c: loss law
# ----------------------------------------------------------------------------------------------

def seed_spread(runs) -> dict[str, Any]:
    """The seed-to-seed spread at points run with several seeds, beside the depth of the profiles
    (the loss differences the law is fitted to): seeds matter where the two are comparable."""
    ok = runs[runs["status"] == "completed"]
    key = ok["params"].astype(int).astype(str) + "/" + ok["flops"].round(-8).astype(str)
    g = ok.groupby(key)["loss_val"]
    rel = (g.std() / g.mean()).dropna()
    depth = []
    for _, prof in ok.groupby(ok["flops"].round(-8)):
        means = prof.groupby("params")["loss_val"].mean()
        if len(means) >= 3:
            depth.append(float(means.max() / means.min() - 1))
    out = {"points_with_seeds": int(len(rel)), "seed_spread_pct_median": float(100 * rel.median()) if len(rel) else None,
           "profile_depth_pct_median": float(100 * np.median(depth)) if depth else None}
    if out["seed_spread_pct_median"] and out["profile_depth_pct_median"]:
        out["spread_over_depth"] = out["seed_spread_pct_median"] / out["profile_depth_pct_median"]
    return out


def stage_loss(s: Study) -> dict[str, Any]:
    from lab.results import load_runs

    lc, cfg = s.cfg.loss, s.cfg
    sweeps = list(s.inputs.get("loss_sweeps") or [])
    if not sweeps:
        law = s.need("hparams", "law", "hparams_law")
        mixture = s.need("mixture", "mixture", "mixture")
        extra = {"data__mixture": _mapping(mixture)} if isinstance(mixture, dict) else {"data__mixture": mixture}
        fixed = s.fixed(design__sizes=_list(lc.sizes), design__budgets=_list(lc.budgets), design__spread=lc.spread,
                        design__hparams=law, **extra)
        seeds = ",".join(str(cfg.seed * 100 + i) for i in range(lc.seeds))
        axes = [f"design.size=range({len(lc.sizes)})", f"train.seed={seeds}"]
        s.sweep("isoflop_wsd", "c_loss", axes, fixed, "stage c: IsoFLOP profiles (WSD branches, seeds)", "loss")
        sweeps = [str(s.out / "c_loss")]
    spread = seed_spread(load_runs(*sweeps))
    if spread.get("spread_over_depth") and spread["spread_over_depth"] > 0.5:
        s.say(f"stage c: the seed spread ({spread['seed_spread_pct_median']:.2f}%) is comparable to the profiles' depth "
              f"({spread['profile_depth_pct_median']:.2f}%): add seeds (LossStage.seeds) for a sharper N_opt")
    return {"sweeps": sweeps, "seeds": spread}


# ----------------------------------------------------------------------------------------------
# d: recipe
# ----------------------------------------------------------------------------------------------

def stage_recipe(s: Study) -> dict[str, Any]:
    from lab.recipe import summary, write_recipe
    from lab.recipe.build import build_recipe
    from lab.recipe.format import RecipeError

    cfg = s.cfg
    loss = s.need("loss", "sweeps", "loss_sweeps")
    law = s.need("hparams", "law", "hparams_law")
    # the recipe keeps the loss runs' mixture; it is `fitted` when it is the one stage b chose
    mix_law = s.state.stage("mixture").get("law") if s.inputs.get("mixture") is None and s.state.done("mixture") else None
    try:
        recipe = build_recipe(list(loss), target_flops=cfg.target_flops, bootstrap=cfg.bootstrap, seed=cfg.seed,
                              hparam_law=law, mixing_law=mix_law, force=s.force)
    except RecipeError as e:
        raise StageInputError(f"stage d (recipe): {e}") from None
    path, sbatch = write_recipe(recipe, s.out / "recipe.yaml")
    print(summary(recipe), flush=True)
    d = recipe.to_dict()
    return {"recipe": str(path), "sbatch": str(sbatch), "counts": d["counts"], "train": d["train"],
            "mixture": d["data"]["mixture"], "prediction": d["prediction"], "health": d["laws"]["loss"]["health"],
            "fitted": {k: d["laws"][k]["fitted"] for k in ("loss", "batch_size", "lr", "mixture")},
            "law": {k: d["laws"]["loss"][k] for k in ("law", "params", "intervals", "holdout")}}


# ----------------------------------------------------------------------------------------------
# e: the full-size run, f: back-test, g: summary
# ----------------------------------------------------------------------------------------------

def full_seeds(cfg: StudyConfig) -> list[int]:
    return [cfg.seed * 100 + i for i in range(cfg.full_seeds)]


def stage_full(s: Study) -> dict[str, Any]:
    from lab.recipe import load_recipe

    recipe = Path(s.need("recipe", "recipe", "recipe"))
    steps = load_recipe(recipe).train.steps
    seeds = full_seeds(s.cfg)
    threads = max(1, (os.cpu_count() or 1) // len(seeds))
    dirs = {sd: s.out / "e_full" / f"seed{sd}" for sd in seeds}
    for d in dirs.values():
        _set_aside_if_stale(s, d, recipe)
    todo = {sd: d for sd, d in dirs.items() if completed_result(d) is None}
    s.say(f"stage e: {len(seeds)} full-size run(s) of {recipe} ({len(todo)} to train, {threads} thread(s) each, "
          f"{steps} steps) -> {s.out / 'e_full'}")
    procs = {sd: train_recipe(recipe, d, sd, threads) for sd, d in todo.items()}
    t0 = last = time.time()
    while any(p.poll() is None for p in procs.values()):
        time.sleep(2)
        if time.time() - last >= 30:
            last = time.time()
            s.say("stage e: " + "; ".join(_progress(dirs[sd], steps, t0) for sd in procs))
    results = {sd: completed_result(d) for sd, d in dirs.items()}
    bad = [str(dirs[sd]) for sd, r in results.items() if r is None]
    if bad:
        raise RuntimeError(f"stage e: full-size run(s) did not complete: {', '.join(bad)} (see train.log there)")
    return {"runs": {str(sd): str(d) for sd, d in dirs.items()},
            "loss_val": {str(sd): r["loss_val"] for sd, r in results.items()},
            "wall_s_runs": {str(sd): r.get("wall_s") for sd, r in results.items()},
            "flops": sum(float(r["flops"]) for r in results.values())}


def _set_aside_if_stale(s: Study, run_dir: Path, recipe: Path) -> None:
    """A full-size run trained from another recipe (stage d rerun) is renamed, not reused or lost."""
    from lab.recipe.format import recipe_sha256

    res = completed_result(run_dir)
    if res is not None and res.get("recipe_sha256") != recipe_sha256(recipe):
        stale = run_dir.with_name(f"{run_dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(stale)
        s.say(f"stage e: {run_dir} was trained from another recipe; kept as {stale}, retraining")


def _progress(run_dir: Path, steps: int, t0: float) -> str:
    """'seedS: step k/n, ETA m min' from the run's metrics (its last complete line)."""
    from lab.io import jsonl_rows

    try:
        rows = [r for _, r in jsonl_rows((run_dir / "metrics.jsonl").read_text()) if r is not None]
        step = int(rows[-1]["step"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return f"{run_dir.name}: starting"
    eta = (time.time() - t0) / max(step, 1) * (steps - step) / 60
    return f"{run_dir.name}: step {step}/{steps}, ETA {eta:.1f} min"


def floor(losses: list[float]) -> dict[str, Any]:
    """The seed-to-seed spread of the target run itself: no prediction can be sharper than this."""
    x = np.array(losses, float)
    if len(x) < 2:
        return {"seeds": len(x), "std_pct": None, "range_pct": None}
    return {"seeds": len(x), "mean": float(x.mean()), "std_pct": float(100 * x.std(ddof=1) / x.mean()),
            "range_pct": float(100 * (x.max() - x.min()) / x.mean())}


def _domain_errors(bts: dict[str, Any]) -> dict[str, Any]:
    """Per domain: the error against the seeds' mean achieved loss, and whether the interval holds it."""
    first = bts[next(iter(bts))]["domains"]
    out = {}
    for d, v in first.items():
        achieved = float(np.mean([b["domains"][d]["achieved"] for b in bts.values()]))
        lo, hi = v.get("interval") or (None, None)
        out[d] = {"rel_error_pct": 100 * (v["predicted"] / achieved - 1), "achieved": achieved,
                  "covered": lo is not None and hi is not None and lo <= achieved <= hi}
    return out


def stage_backtest(s: Study) -> dict[str, Any]:
    from lab.backtest import backtest_run, report
    from lab.recipe import load_recipe

    recipe = load_recipe(s.need("recipe", "recipe", "recipe"))
    runs = s.need("full", "runs", "full_runs")
    path = s.need("recipe", "recipe", "recipe")
    bts = {sd: backtest_run(recipe, d, path) for sd, d in runs.items()}
    first = bts[next(iter(bts))]
    print(report(first), flush=True)
    o = first["overall"]
    lo, hi = o["interval"]
    half = 100 * (hi - lo) / 2 / o["predicted"] if lo is not None and hi is not None else math.nan
    fl = floor([b["overall"]["achieved"] for b in bts.values()])
    # the prediction is of the recipe's expected loss: its best estimate is the mean over the seeds
    achieved = fl.get("mean", o["achieved"])
    err = 100 * (o["predicted"] / achieved - 1)
    covered = lo is not None and hi is not None and lo <= achieved <= hi
    out = {"rel_error_pct": err, "half_width_pct": half, "covered": covered, "predicted": o["predicted"],
           "interval": o["interval"], "achieved": achieved, "achieved_by": f"mean of {len(bts)} seed(s)",
           "rel_error_vs_seed_mean_pct": err, "rel_error_first_seed_pct": o["rel_error_pct"], "floor": fl,
           "domains": _domain_errors(bts),
           "per_seed": {sd: b["overall"]["rel_error_pct"] for sd, b in bts.items()}}
    s.say(f"stage f: error {err:+.2f}% against the mean of {len(bts)} seed(s) (per seed: "
          + ", ".join(f"{v['overall']['rel_error_pct']:+.2f}%" for v in bts.values())
          + f"; 95% half-width {half:.2f}%, covered: {covered}); seed floor: "
          f"{fl['std_pct'] if fl['std_pct'] is not None else float('nan'):.2f}% std over {fl['seeds']} seed(s)")
    return out
