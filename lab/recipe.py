"""Recipes: the fitted laws of one or more sweeps, turned into the settings of the full-size run.

``python -m lab.recipe SWEEP_DIR... --target-flops C [--out recipe.yaml]`` (or ``--target-params N``
/ ``--target-tokens D``) fits the loss law to the sweeps' runs, picks the compute-optimal N and D
at the target in the lab's own FLOP convention, turns N into a shape with the sweeps' shape rule,
and writes one YAML file: shape, N, D, batch (tokens, sequences, micro-batch), peak LR and schedule,
mixture, the predicted final loss overall and per domain with bootstrap intervals, and provenance
(sweeps, fits and their constants, lab version). Beside it, ``<name>.sbatch`` launches the run on
a Slurm cluster with torchrun. The run itself is ``python -m lab.train recipe=recipe.yaml``
(``torchrun --nproc_per_node=K -m lab.train recipe=...`` for data parallel); when it finishes the
trainer back-tests the prediction (:mod:`lab.backtest`).

Laws not fitted yet (batch size and LR laws, mixing laws) take the sweeps' settings and are marked
``fitted: false``; the ``laws`` section has a slot for each, so later fits fill them in.

Recipes load with ``yaml.safe_load`` only, are validated field by field (a hand-edited recipe gets
an error naming the field), and a recipe from another lab version is refused with a clear message.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

import lab
from lab.config import SCHEDULES, ModelConfig, RunConfig, TrainConfig
from lab.counting import counts, resolve_shape, shape_for_params, steps_for_tokens

FORMAT = 1
EXTRAPOLATION_WARN = 100.0   # target C / largest sweep C above which the recipe warns
DEFAULT_MICRO_TOKENS = 4096  # micro-batch size in tokens the recipe aims for (memory, not maths)


class RecipeError(ValueError):
    """A recipe that cannot be built or used; the message names the field or the missing input."""


# ----------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------

def _mode(runs: pd.DataFrame, col: str, default: Any = None) -> Any:
    if col not in runs.columns:
        return default
    v = runs[col].dropna()
    if v.empty:
        return default
    try:
        return v.mode().iloc[0]
    except TypeError:  # unhashable values (a mixture dict): the most common rendering
        return v.astype(str).mode().iloc[0]


def _settings(runs: pd.DataFrame) -> dict[str, Any]:
    """The sweeps' shared settings: shape rule, data, optimiser (most common value per column)."""
    s = {
        "vocab_size": int(_mode(runs, "vocab_size", 256)),
        "seq_len": int(_mode(runs, "seq_len", _mode(runs, "data.seq_len", 256))),
        "aspect": int(_mode(runs, "design.aspect", _mode(runs, "model.aspect", 32))),
        "head_dim": int(_mode(runs, "design.head_dim", _mode(runs, "model.head_dim", 16))),
        "kv_ratio": int(_mode(runs, "model.kv_ratio", 1)),
        "ffn_mult": float(_mode(runs, "model.ffn_mult", 8 / 3)),
        "ffn_multiple_of": int(_mode(runs, "model.ffn_multiple_of", 32)),
        "tie_embeddings": bool(_mode(runs, "model.tie_embeddings", False)),
        "corpus": str(_mode(runs, "data.corpus", "builtin")),
        "tokenizer": str(_mode(runs, "data.tokenizer", "byte")),
        "bpe_vocab_size": int(_mode(runs, "data.bpe_vocab_size", 4096)),
        "val_tokens": int(_mode(runs, "data.val_tokens", 32768)),
        "batch_tokens": int(_mode(runs, "batch_tokens", 4096)),
        "lr": float(_mode(runs, "lr", 3e-3)),
    }
    for k in ("schedule", "warmup", "min_lr_ratio", "decay", "decay_shape", "weight_decay", "beta1", "beta2",
              "eps", "grad_clip"):
        default = getattr(TrainConfig(), k)
        v = _mode(runs, f"train.{k}", default)
        s[k] = type(default)(v) if v is not None else default
    vw = _mode(runs, "data.val_weights", "mixture")
    if isinstance(vw, str) and vw.strip().startswith("{"):  # the tables store mappings as JSON text
        import json
        vw = json.loads(vw)
    s["val_weights"] = vw if isinstance(vw, (str, dict)) else "mixture"
    for k in ("init_std", "rope_theta", "norm_eps"):
        s[k] = float(_mode(runs, f"model.{k}", getattr(ModelConfig(), k)))
    s["varied"] = [c for c in ("lr", "batch_tokens", "train.schedule", "seq_len")
                   if c in runs.columns and runs[c].dropna().nunique() > 1]
    mix_cols = [c for c in runs.columns if c.startswith("mix_")]
    if mix_cols:
        row = runs[mix_cols].dropna().iloc[0] if not runs[mix_cols].dropna().empty else None
        s["mixture"] = {c[4:]: float(row[c]) for c in mix_cols} if row is not None else "natural"
    else:
        s["mixture"] = "natural"
    return s


def _micro_batch(batch_seqs: int, seq_len: int) -> int:
    target = max(1, DEFAULT_MICRO_TOKENS // seq_len)
    return max(k for k in range(1, batch_seqs + 1) if batch_seqs % k == 0 and k <= max(target, 1))


def _loss_at(res, N: float, D: float) -> tuple[float, list[float]]:
    """Approach-3 loss at (N, D) and its bootstrap interval."""
    p, s = res.params, res.samples
    point = p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]
    if "E" in s:
        with np.errstate(all="ignore"):
            draws = s["E"] + s["A"] / N ** s["alpha"] + s["B"] / D ** s["beta"]
        from lab.fit.engine.bootstrap import interval
        return float(point), list(interval(draws, res.level))
    return float(point), [math.nan, math.nan]


def _allocation_for(res, fm, C: float) -> tuple[float, float]:
    """Approach 3's compute-optimal (N, D) at C under the data's FLOP convention."""
    from lab.fit.engine.allocation import optimal_allocation
    law, th = res.extra["law"], res.extra["theta"][None, :]
    n, d, _ = optimal_allocation(lambda lnN, lnD: np.exp(law.forward(th, {"lnN": lnN, "lnD": lnD})[0]), C, fm,
                                 (0.0, math.log(C) - 1))
    return float(n[0]), float(d[0])


def _solve_C(fn, target: float, lo: float, hi: float) -> float:
    """C with fn(C) = target for increasing fn, by bisection in log C."""
    a, b = math.log(lo), math.log(hi)
    for _ in range(60):
        m = 0.5 * (a + b)
        if fn(math.exp(m)) < target:
            a = m
        else:
            b = m
    return math.exp(0.5 * (a + b))


def build_recipe(*args, **kwargs) -> dict[str, Any]:
    """Fit the sweeps and derive the full-size run; see the module docstring for the contents."""
    with np.errstate(all="ignore"):
        return _build_recipe(*args, **kwargs)


def _build_recipe(sweeps: list[str], target_flops: float | None = None, target_params: float | None = None,
                 target_tokens: float | None = None, approach: str = "auto", bootstrap: int = 500,
                 seed: int = 0, hparam_sweeps: list[str] | None = None, mixing_sweeps: list[str] | None = None,
                 mixing_weights: str | None = None) -> dict[str, Any]:
    """Fit the sweeps and derive the full-size run; see the module docstring for the contents."""
    from lab.fit.engine.allocation import FlopModel
    from lab.fit.engine.errors import FitError
    from lab.fit.engine.points import load_points
    from lab.fit.loss.chinchilla import approach2, approach3
    from lab.results import load_runs

    given = [x is not None for x in (target_flops, target_params, target_tokens)]
    if sum(given) != 1:
        raise RecipeError("give exactly one target: --target-flops C, --target-params N or --target-tokens D")
    for name, v in (("--target-flops", target_flops), ("--target-params", target_params),
                    ("--target-tokens", target_tokens)):
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise RecipeError(f"{name} must be a positive number, got {v!r}")
    if approach not in ("auto", "2", "3"):
        raise RecipeError(f"approach {approach!r}: allowed auto, 2, 3")
    for s in sweeps:
        if not Path(s).is_dir():
            raise RecipeError(f"sweep folder {s!r} does not exist")
    runs = load_runs(*sweeps)
    ok = runs[runs["status"] == "completed"] if "status" in runs.columns else runs
    if "cooldown" in ok.columns:
        ok = ok[~ok["cooldown"].fillna(False).astype(bool)]
    if ok.empty:
        raise RecipeError(f"no completed runs in {', '.join(sweeps)}")
    st = _settings(ok)
    pts = load_points(runs)
    fm = FlopModel(pts.N, pts.C, pts.D)
    rule = dict(vocab_size=st["vocab_size"], seq_len=st["seq_len"], aspect=st["aspect"], head_dim=st["head_dim"],
                kv_ratio=st["kv_ratio"], ffn_mult=st["ffn_mult"], ffn_multiple_of=st["ffn_multiple_of"],
                tie_embeddings=st["tie_embeddings"])
    notes: list[str] = []
    res3 = res2 = None
    if approach in ("auto", "3"):
        try:
            res3 = approach3(pts, bootstrap=bootstrap, seed=seed, target_flops=target_flops)
        except FitError as e:
            if approach == "3":
                raise RecipeError(f"approach 3 cannot be fitted: {e}") from e
            notes.append(f"approach 3 not fitted ({e}); using approach 2")
    if res3 is None:
        try:
            res2 = approach2(pts, bootstrap=bootstrap, seed=seed, target_flops=target_flops)
        except FitError as e:
            raise RecipeError(f"no loss law can be fitted to {', '.join(sweeps)}: {e}") from e

    # target -> (C, N_opt) under the lab's C convention
    cmax = float(pts.C.max())
    if res3 is not None:
        alloc = lambda C: _allocation_for(res3, fm, C)  # noqa: E731
    else:
        p2 = res2.params
        alloc = lambda C: (p2["G"] * C ** p2["a"], p2["H"] * C ** p2["b"])  # noqa: E731
    if target_flops is not None:
        C = float(target_flops)
    elif target_params is not None:
        C = _solve_C(lambda c: alloc(c)[0], float(target_params), 1e3, 1e35)
    else:
        C = _solve_C(lambda c: alloc(c)[1], float(target_tokens), 1e3, 1e35)
    n_opt, d_opt = alloc(C)
    if not (math.isfinite(n_opt) and math.isfinite(d_opt) and n_opt > 0 and d_opt > 0):
        raise RecipeError(f"the fitted law gives no compute-optimal allocation at C={C:.3g} (N_opt={n_opt}, "
                          f"D_opt={d_opt}); the fit is degenerate, look at the fit report")
    for name, want, got in (("--target-params", target_params, n_opt), ("--target-tokens", target_tokens, d_opt)):
        if want is not None and abs(math.log(got / want)) > 0.01:
            raise RecipeError(f"{name} {want:.3g}: the fitted law never makes it compute-optimal "
                              f"(closest: {got:.3g}); give --target-flops instead")
    if st["varied"]:
        notes.append(f"the sweeps vary {', '.join(st['varied'])}; the recipe takes the most common value "
                     "(fit the hyperparameter laws to choose them)")
    if target_params is not None:
        n_opt = float(target_params)
    shape = shape_for_params(n_opt, **rule)
    c = counts(shape)
    if target_tokens is not None:
        D = float(target_tokens)
    else:
        D = C / c["flops_per_token"]      # spend C exactly with the shape actually chosen
    B, lr = st["batch_tokens"], st["lr"]
    hp_law = None
    if hparam_sweeps:
        B, lr, hp_law = _hparams_from(hparam_sweeps, C, st["seq_len"], bootstrap, seed, notes)
    steps = steps_for_tokens(D, B, "the recipe's D")
    D = float(steps * B)
    mix_law = None
    if mixing_sweeps:
        st["mixture"], mix_law = _mixture_from(mixing_sweeps, float(c["params"]), D, mixing_weights, bootstrap,
                                               seed, notes)
    C_run = D * c["flops_per_token"]
    factor = C_run / cmax
    if factor > EXTRAPOLATION_WARN:
        notes.append(f"extrapolating {factor:.0f}x beyond the largest sweep budget ({cmax:.3g} FLOPs): "
                     "the fitted form may not hold that far; treat the interval as optimistic")

    # predicted loss overall and per domain
    prediction: dict[str, Any] = {"level": 0.95}
    if res3 is not None:
        L, iv = _loss_at(res3, c["params"], D)
        prediction.update(loss_val=L, loss_val_interval=iv, law="chinchilla approach 3",
                          at={"N": c["params"], "D": D})
        domains = {}
        for col in [k for k in runs.columns if k.startswith("loss_val_")]:
            try:
                dom_pts = load_points(runs, loss=col)
                r = approach3(dom_pts, bootstrap=min(bootstrap, 200), seed=seed, holdout=False)
                Ld, ivd = _loss_at(r, c["params"], D)
                domains[col[len("loss_val_"):]] = {"loss_val": Ld, "loss_val_interval": ivd}
            except FitError as e:
                notes.append(f"no per-domain law for {col}: {e}")
        prediction["domains"] = domains
    else:
        p2 = res2.params
        L = (p2["C_c"] / C_run) ** p2["alpha_C"]
        s2 = res2.samples
        from lab.fit.engine.bootstrap import interval
        with np.errstate(all="ignore"):
            draws = (s2["C_c"] / C_run) ** s2["alpha_C"] if "C_c" in s2 else np.array([])
        prediction.update(loss_val=float(L), loss_val_interval=list(interval(draws)), law="chinchilla approach 2 "
                          "(L* = (C_c / C)^alpha_C through the IsoFLOP minima)", at={"C": C_run})
        notes.append("per-domain predictions need approach 3; not given")
    fit = res3 if res3 is not None else res2
    batch_seqs = B // st["seq_len"]
    recipe = {
        "lab_recipe": FORMAT,
        "lab_version": lab.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "target": {"flops": target_flops, "params": target_params, "tokens": target_tokens},
        "model": {"num_layers": shape.num_layers, "d_model": shape.d_model, "num_heads": shape.num_heads,
                  "num_kv_heads": shape.num_kv_heads, "d_ff": shape.d_ff, "head_dim": shape.head_dim,
                  "tie_embeddings": shape.tie_embeddings, "init_std": st["init_std"],
                  "rope_theta": st["rope_theta"], "norm_eps": st["norm_eps"]},
        "counts": {"params": c["params"], "params_total": c["params_total"], "tokens": D, "flops": C_run,
                   "flops_per_token": c["flops_per_token"], "tokens_per_param": D / c["params"],
                   "N_opt_law": n_opt, "D_opt_law": d_opt,
                   "convention": pts.convention.get("C", "")},
        "data": {"corpus": st["corpus"], "tokenizer": st["tokenizer"], "bpe_vocab_size": st["bpe_vocab_size"],
                 "seq_len": st["seq_len"], "mixture": st["mixture"], "val_weights": st["val_weights"],
                 "val_tokens": st["val_tokens"]},
        "train": {"tokens": D, "batch_tokens": B, "batch_seqs": batch_seqs,
                  "micro_batch": _micro_batch(batch_seqs, st["seq_len"]), "steps": steps, "lr": lr,
                  **{k: st[k] for k in ("schedule", "warmup", "min_lr_ratio", "decay", "decay_shape",
                                        "weight_decay", "beta1", "beta2", "eps", "grad_clip")}},
        "prediction": prediction,
        "laws": {
            "loss": {"fitted": True, "law": fit.law, "formula": fit.formula, "params": fit.params,
                     "intervals": fit.intervals, "n_points": fit.diagnostics.get("n_points"),
                     "residual_rms_log": fit.diagnostics.get("residuals", {}).get("rms_log"),
                     "holdout": {k: v for k, v in (fit.diagnostics.get("holdout") or {}).items() if k != "errors_pct"}},
            "batch_size": ({"fitted": True, "value": B, **hp_law["batch_size"]} if hp_law else
                           {"fitted": False, "value": B, "source": "the sweeps' train.batch_tokens"}),
            "lr": ({"fitted": True, "value": lr, **hp_law["lr"]} if hp_law else
                   {"fitted": False, "value": lr, "source": "the sweeps' train.lr"}),
            "mixture": ({"fitted": True, "value": st["mixture"], **mix_law} if mix_law else
                        {"fitted": False, "value": st["mixture"], "source": "the sweeps' training mixture"}),
        },
        "provenance": {"sweeps": [str(Path(s).resolve()) for s in sweeps], "runs_used": len(pts),
                       "runs_dropped": len(pts.dropped), "largest_sweep_flops": cmax,
                       "extrapolation_factor": factor, "flop_model": fm.describe(),
                       "convention": dict(pts.convention)},
        "notes": notes,
    }
    return _jsonable(recipe)


def _mixture_from(sweeps: list[str], N: float, D: float, weights: str | None, bootstrap: int, seed: int,
                  notes: list[str]) -> tuple[dict[str, float], dict[str, Any]]:
    """The optimal mixture from mixture sweeps (lab.fit mixing): nested at the recipe's (N, D) when the
    sweeps allow it, else the mixing law at their largest proxy size (said in the notes)."""
    from lab.fit.engine.errors import FitError
    from lab.fit.mixing.law import fit_mixing_law, load_mixing, one_size, target_weights
    from lab.fit.mixing.nested import nested_predict
    from lab.fit.mixing.optimize import make_box, optimize
    from lab.results import load_runs
    for s in sweeps:
        if not Path(s).is_dir():
            raise RecipeError(f"--mixing sweep folder {s!r} does not exist")
    try:
        data = load_mixing(load_runs(*sweeps))
        w = target_weights(weights, data.val_domains)
        try:
            fit_data, rep = nested_predict(data, N, D)
            how = f"nested: size law per mixture predicted at N={N:.3g}, D={D:.3g} ({rep['extrapolation']:.1f}x)"
        except FitError as e:
            fit_data, pooled = one_size(data, None)
            where = (f"the largest proxy size with enough runs, N={float(np.nanmax(fit_data.N)):.3g}"
                     if fit_data.N is not None and not pooled else "all proxy sizes pooled: " + str(pooled))
            how = f"mixing law at {where} (not nested: {e})"
            notes.append(f"mixture: {how}")
        model = fit_mixing_law(fit_data, bootstrap=min(bootstrap, 200), seed=seed)
        opt = optimize(model, w, make_box(data.domains, data_range=(fit_data.R.min(0), fit_data.R.max(0))),
                       data.natural, seed=seed)
    except FitError as e:
        raise RecipeError(f"--mixing: {e}") from None
    notes.append("prediction.loss_val is the loss law's, fitted on the loss sweeps' own mixture; the mixing law "
                 f"expects the chosen mixture to change the target loss by {-opt['uniform']['gain']:+.4f} vs uniform")
    law = {"law": "data mixing law (Ye et al. 2024)", "how": how, "target_weights": opt["target_weights"],
           "predicted_target": opt["target"], "predicted_target_interval": opt.get("target_interval"),
           "gain_vs_uniform": opt["uniform"]["gain"], "gain_vs_natural": opt.get("natural", {}).get("gain"),
           "held_out_mae": model.diagnostics["held_out"].get("mae", {}).get("mean"),
           "sweeps": [str(Path(s).resolve()) for s in sweeps]}
    return {d: round(float(x), 6) for d, x in opt["mixture"].items()}, law


def _hparams_from(sweeps: list[str], C: float, seq_len: int, bootstrap: int, seed: int,
                  notes: list[str]) -> tuple[int, float, dict[str, Any]]:
    """Batch (tokens, a power-of-two number of sequences) and peak LR from the fitted form-C laws."""
    from lab.fit.hparams import fit_hparams, load_hparams, predict_hparams
    from lab.results import load_runs

    for s in sweeps:
        if not Path(s).is_dir():
            raise RecipeError(f"--hparams sweep folder {s!r} does not exist")
    res = fit_hparams(load_hparams(load_runs(*sweeps), form="C"), form="C", bootstrap=min(bootstrap, 300),
                      seed=seed, target_flops=C)
    b_opt, lr_opt = predict_hparams(res.params, "C", C=C)
    seqs = 2 ** max(0, round(math.log2(max(1.0, b_opt / seq_len))))
    notes.extend(f"batch/LR law: {w}" for w in res.diagnostics["edge_warnings"])
    iv = res.predictions
    common = {"law": res.formula, "params": res.params, "intervals": res.intervals,
              "sweeps": [str(Path(s).resolve()) for s in sweeps], "edge_warnings": res.diagnostics["edge_warnings"]}
    law = {"batch_size": {**common, "B_opt_law": b_opt, "B_opt_interval": iv.get("B_opt_interval"),
                          "rounding": f"{seqs} sequences of {seq_len} (nearest power of two)"},
           "lr": {**common, "lr_opt_law": lr_opt, "lr_opt_interval": iv.get("lr_opt_interval")}}
    return seqs * seq_len, float(lr_opt), law


def _jsonable(v: Any) -> Any:
    from lab.fit.engine.result import to_jsonable
    return to_jsonable(v)


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

def write_recipe(recipe: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write the recipe YAML and a Slurm launch script beside it; return both paths."""
    from lab.io import atomic_write_bytes
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    head = (f"# lab recipe (format {FORMAT}, lab {recipe['lab_version']}): the full-size run derived from fitted laws.\n"
            f"# Train it: python -m lab.train recipe={out} run_dir=runs/full\n"
            f"#   data parallel: torchrun --nproc_per_node=K -m lab.train recipe={out} run_dir=runs/full\n"
            f"#   Slurm: sbatch {out.with_suffix('.sbatch')}\n")
    atomic_write_bytes(out, (head + yaml.safe_dump(recipe, sort_keys=False, width=110)).encode())
    sb = out.with_suffix(".sbatch")
    seqs = int(recipe["train"]["batch_seqs"])
    gpus = 8
    micro = max([m for m in range(1, seqs + 1) if seqs % m == 0 and (seqs // m) % gpus == 0] or [1])
    atomic_write_bytes(sb, slurm_script(out, gpus_per_node=gpus, micro_batch=micro).encode())
    return out, sb


def slurm_script(recipe_path: Path, nodes: int = 1, gpus_per_node: int = 8, micro_batch: int = 1) -> str:
    """An sbatch script: one torchrun per node, rendezvous on the first node (c10d)."""
    return f"""#!/bin/bash
# Launch the recipe's run on a Slurm cluster: one torchrun per node, {gpus_per_node} processes per node.
# Edit the SBATCH lines for your cluster; the run resumes from its checkpoint when requeued.
#SBATCH --job-name=lab-recipe
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus_per_node}
#SBATCH --cpus-per-task=16
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --signal=USR2@120
#SBATCH --output=%x-%j.out
set -euo pipefail
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
RUN_DIR=${{RUN_DIR:-runs/{Path(recipe_path).stem}}}
srun torchrun --nnodes="$SLURM_NNODES" --nproc_per_node={gpus_per_node} \\
  --rdzv_id="$SLURM_JOB_ID" --rdzv_backend=c10d --rdzv_endpoint="$HEAD:29500" \\
  -m lab.train recipe={Path(recipe_path).resolve()} run_dir="$RUN_DIR" train.micro_batch={micro_batch}
"""


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read (safe YAML) and validate a recipe; RecipeError names the bad field."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {str(path)!r} does not exist")
    try:
        r = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path}: not valid YAML (safe loader): {e}") from e
    if not isinstance(r, dict) or "lab_recipe" not in r:
        raise RecipeError(f"recipe {path}: not a lab recipe (no 'lab_recipe' format key)")
    if r["lab_recipe"] != FORMAT:
        raise RecipeError(f"recipe {path}: format {r['lab_recipe']!r}, this lab reads format {FORMAT}")
    if r.get("lab_version") != lab.__version__:
        raise RecipeError(f"recipe {path} was written by lab {r.get('lab_version')!r}, this is lab {lab.__version__}: "
                          "laws and counting may differ between versions; rebuild it with python -m lab.recipe")
    for sec in ("model", "data", "train", "prediction"):
        if not isinstance(r.get(sec), dict):
            raise RecipeError(f"recipe {path}: section {sec!r} is missing or not a mapping")
    m = r["model"]
    for k in ("num_layers", "d_model", "num_heads", "num_kv_heads", "d_ff", "head_dim"):
        v = m.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise RecipeError(f"recipe {path}: model.{k} must be a positive integer, got {v!r}")
    try:
        resolve_shape(vocab_size=256, seq_len=int(r["data"].get("seq_len", 256)), num_layers=m["num_layers"],
                      d_model=m["d_model"], num_heads=m["num_heads"], num_kv_heads=m["num_kv_heads"],
                      d_ff=m["d_ff"], head_dim=m["head_dim"])
    except ValueError as e:
        raise RecipeError(f"recipe {path}: model: {e}") from e
    if not isinstance(m.get("tie_embeddings", False), bool):
        raise RecipeError(f"recipe {path}: model.tie_embeddings must be true or false, got {m.get('tie_embeddings')!r}")
    p = r["prediction"]
    if not isinstance(p.get("loss_val"), (int, float)) or isinstance(p.get("loss_val"), bool):
        raise RecipeError(f"recipe {path}: prediction.loss_val must be a number, got {p.get('loss_val')!r}")
    t = r["train"]
    for k in ("batch_tokens", "micro_batch"):
        v = t.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise RecipeError(f"recipe {path}: train.{k} must be an integer, got {v!r}")
    if t.get("schedule") not in SCHEDULES:
        raise RecipeError(f"recipe {path}: train.schedule {t.get('schedule')!r}; allowed: {', '.join(SCHEDULES)}")
    for k in ("tokens", "batch_tokens", "lr"):
        v = t.get(k)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (v > 0 and math.isfinite(v)):
            raise RecipeError(f"recipe {path}: train.{k} must be a positive number, got {v!r}")
    mix = r["data"].get("mixture")
    if isinstance(mix, dict):
        vals = list(mix.values())
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0
               for v in vals) or not abs(sum(vals) - 1) <= 1e-6:
            raise RecipeError(f"recipe {path}: data.mixture must be non-negative shares summing to 1, got {mix}")
    elif mix not in ("natural", "uniform"):
        raise RecipeError(f"recipe {path}: data.mixture must be 'natural', 'uniform' or {{domain: share}}, got {mix!r}")
    try:
        apply_recipe(RunConfig(), r).validate()
    except (ValueError, TypeError) as e:
        raise RecipeError(f"recipe {path}: {e}") from e
    return r


def apply_recipe(cfg: RunConfig, recipe: dict[str, Any]) -> RunConfig:
    """``cfg`` with the recipe's model, data and optimisation; hardware, run_dir and logging stay."""
    m, d, t = recipe["model"], recipe["data"], recipe["train"]
    dm = ModelConfig()
    model = ModelConfig(depth=None, num_layers=m["num_layers"], d_model=m["d_model"], num_heads=m["num_heads"],
                        num_kv_heads=m["num_kv_heads"], d_ff=m["d_ff"], head_dim=m["head_dim"],
                        tie_embeddings=bool(m.get("tie_embeddings", False)),
                        init_std=float(m.get("init_std", dm.init_std)), rope_theta=float(m.get("rope_theta", dm.rope_theta)),
                        norm_eps=float(m.get("norm_eps", dm.norm_eps)))
    data = replace(cfg.data, corpus=d.get("corpus", cfg.data.corpus), tokenizer=d.get("tokenizer", cfg.data.tokenizer),
                   bpe_vocab_size=int(d.get("bpe_vocab_size", cfg.data.bpe_vocab_size)),
                   seq_len=int(d.get("seq_len", cfg.data.seq_len)), mixture=d.get("mixture", "natural"),
                   val_weights=d.get("val_weights", "mixture"), val_tokens=int(d.get("val_tokens", cfg.data.val_tokens)))
    keep = {k: getattr(cfg.train, k) for k in ("device", "dtype", "compile", "threads", "progress", "tensorboard",
                                                "wandb", "wandb_mode", "wandb_project", "ckpt_every", "eval_every",
                                                "log_every", "keep_ckpt", "seed", "diverge_factor", "parallel")}
    opt = {k: t[k] for k in ("lr", "schedule", "warmup", "min_lr_ratio", "decay", "decay_shape", "weight_decay",
                             "beta1", "beta2", "eps", "grad_clip") if k in t}
    train = TrainConfig(tokens=float(t["tokens"]), flops=None, batch_tokens=int(t["batch_tokens"]),
                        # a command-line micro-batch wins: it is memory and process layout, not the recipe
                        micro_batch=cfg.train.micro_batch or t.get("micro_batch"), **opt, **keep)
    return replace(cfg, model=model, data=data, train=train)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def summary(recipe: dict[str, Any]) -> str:
    c, m, t, p = recipe["counts"], recipe["model"], recipe["train"], recipe["prediction"]
    iv = [math.nan if v is None else v for v in (p.get("loss_val_interval") or [None, None])]
    lines = [
        f"[recipe] target C = {c['flops']:.3g} FLOPs ({recipe['provenance']['extrapolation_factor']:.1f}x the largest "
        f"sweep budget)",
        f"  model  N = {c['params']:,} (total {c['params_total']:,}): {m['num_layers']} layers, d={m['d_model']}, "
        f"heads {m['num_heads']}/{m['num_kv_heads']}, ff {m['d_ff']}   (law's N_opt {c.get('N_opt_law') or math.nan:.3g})",
        f"  data   D = {c['tokens']:.4g} tokens ({c['tokens_per_param']:.0f} tokens/param), mixture "
        f"{recipe['data']['mixture'] if isinstance(recipe['data']['mixture'], str) else 'as swept'}",
        f"  batch  {t['batch_tokens']:,} tokens ({t['batch_seqs']} x {recipe['data']['seq_len']}), micro-batch "
        f"{t['micro_batch']}, {t['steps']:,} steps; lr {t['lr']:.3g} {t['schedule']} (batch/LR laws: "
        + ("fitted)" if recipe["laws"]["lr"]["fitted"] else "not fitted, from the sweeps)"),
        f"  loss   predicted loss_val = {p['loss_val']:.4f} nats/token  [{iv[0]:.4f}, {iv[1]:.4f}] "
        f"({p.get('level', 0.95):.0%}, {p['law']})",
    ]
    for dname, dv in (p.get("domains") or {}).items():
        div = [math.nan if v is None else v for v in (dv.get("loss_val_interval") or [None, None])]
        lines.append(f"         {dname:<14s} {dv['loss_val']:.4f}  [{div[0]:.4f}, {div[1]:.4f}]")
    for n in recipe.get("notes", []):
        lines.append(f"  note: {n}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.recipe", description=__doc__.split("\n\n")[0])
    ap.add_argument("sweeps", nargs="+", help="sweep folders whose runs the laws are fitted to")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--target-flops", type=float, help="training compute C of the full-size run (lab convention)")
    g.add_argument("--target-params", type=float, help="N of the full-size run; D from the compute-optimal law")
    g.add_argument("--target-tokens", type=float, help="D of the full-size run; N from the compute-optimal law")
    ap.add_argument("--out", default="recipe.yaml")
    ap.add_argument("--approach", default="auto", choices=["auto", "2", "3"], help="loss law (auto: 3, else 2)")
    ap.add_argument("--hparams", nargs="+", metavar="SWEEP", help="batch x LR sweeps: take batch and peak LR "
                                                                 "from their fitted laws (lab.fit hparams)")
    ap.add_argument("--mixing", nargs="+", metavar="SWEEP", help="mixture sweeps: take the training mixture from "
                                                                 "the fitted data mixing law (lab.fit mixing)")
    ap.add_argument("--mixing-weights", help="weights of the validation domains in the mixing target "
                                             "('a=1,b=2'; default equal)")
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        r = build_recipe(args.sweeps, args.target_flops, args.target_params, args.target_tokens, args.approach,
                         args.bootstrap, args.seed, args.hparams, args.mixing, args.mixing_weights)
    except (RecipeError, ValueError) as e:
        print(f"lab.recipe: error: {e}", file=sys.stderr)
        return 2
    path, sb = write_recipe(r, args.out)
    print(summary(r))
    print(f"[recipe] wrote {path} and {sb}")
    print(f"[recipe] train it: python -m lab.train recipe={path} run_dir=runs/full")
    return 0


if __name__ == "__main__":
    sys.exit(main())
