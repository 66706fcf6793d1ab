"""Back-test: the recipe's predicted loss against what the run achieved.

``python -m lab.backtest RECIPE RUN_DIR [--json]`` compares ``prediction.loss_val`` (and each
domain's) with the run's ``result.json``, writes ``backtest.json`` into the run folder and prints
the error: absolute (nats/token), relative, and whether the interval covered the outcome.
``python -m lab.train recipe=...`` (and the demo) does this by itself when a recipe run completes
(:func:`after_recipe_run`); the training function itself never back-tests.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from lab.io import atomic_write_json, read_json
from lab.recipe.format import Recipe


def compare(recipe: Recipe | dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Prediction vs outcome, overall and per domain."""
    if isinstance(recipe, Recipe):
        recipe = recipe.to_dict()

    def one(pred: float, iv: list[float] | None, got: float) -> dict[str, Any]:
        lo, hi = (iv or [math.nan, math.nan])[:2]
        lo = math.nan if lo is None else lo
        hi = math.nan if hi is None else hi
        return {"predicted": pred, "interval": [lo, hi], "achieved": got, "error": pred - got,
                "rel_error_pct": 100 * (pred - got) / got if got else math.nan,
                "covered": bool(lo <= got <= hi) if math.isfinite(lo) and math.isfinite(hi) else None}

    p = recipe["prediction"]
    out: dict[str, Any] = {"law": p.get("law"), "level": p.get("level"),
                           "overall": one(p["loss_val"], p.get("loss_val_interval"), result["loss_val"]),
                           "domains": {}}
    got_d = result.get("loss_val_domains", {})
    for d, v in (p.get("domains") or {}).items():
        if d in got_d:
            out["domains"][d] = one(v["loss_val"], v.get("loss_val_interval"), got_d[d])
    out["run"] = {"params": result.get("params"), "tokens": result.get("tokens"), "flops": result.get("flops"),
                  "status": result.get("status")}
    out["recipe_counts"] = {k: recipe.get("counts", {}).get(k) for k in ("params", "tokens", "flops")}
    out["extrapolation_factor"] = recipe.get("provenance", {}).get("extrapolation_factor")
    return out


def report(bt: dict[str, Any]) -> str:
    """The back-test in a few lines: error, relative error and coverage, overall and per domain."""
    o = bt["overall"]
    cov = {True: "inside", False: "OUTSIDE", None: "no interval"}[o["covered"]]
    lines = [f"[backtest] predicted loss_val {o['predicted']:.4f} [{o['interval'][0]:.4f}, {o['interval'][1]:.4f}], "
             f"achieved {o['achieved']:.4f}: error {o['error']:+.4f} nats ({o['rel_error_pct']:+.2f}%), {cov} the "
             f"interval; extrapolated {bt.get('extrapolation_factor') or math.nan:.1f}x beyond the sweep"]
    for d, v in bt["domains"].items():
        c = {True: "in", False: "OUT", None: "-"}[v["covered"]]
        lines.append(f"  {d:<14s} predicted {v['predicted']:.4f}  achieved {v['achieved']:.4f}  "
                     f"{v['rel_error_pct']:+6.2f}%  {c}")
    return "\n".join(lines)


def after_recipe_run(recipe: Recipe, result: dict[str, Any], run_dir: str | Path) -> dict[str, Any] | None:
    """Back-test a completed recipe run: write ``backtest.json`` and add the outcome to ``result.json``.

    Adds ``backtest`` (the overall comparison) or, when the comparison itself fails,
    ``backtest_error``: a back-test problem never costs the run its record. Returns the back-test
    or None.
    """
    if result.get("status") != "completed" or "backtest" in result or "backtest_error" in result:
        return None
    run_dir, bt = Path(run_dir), None
    try:
        bt = compare(recipe, result)
        atomic_write_json(run_dir / "backtest.json", bt)
        result["backtest"] = bt["overall"]
    except Exception as e:  # noqa: BLE001
        result["backtest_error"] = f"{type(e).__name__}: {e}"
    atomic_write_json(run_dir / "result.json", result)
    return bt


def backtest_run(recipe: Recipe | dict[str, Any], run_dir: str | Path, recipe_path: str | Path | None = None
                 ) -> dict[str, Any]:
    """Compare a recipe with the completed run in ``run_dir``; write ``backtest.json`` there.

    With ``recipe_path``, the run must have been trained from that very file (its record holds the
    file's hash): a back-test of a run against another recipe compares nothing and is refused.
    """
    run_dir = Path(run_dir)
    try:
        result = read_json(run_dir / "result.json")
    except FileNotFoundError:
        raise ValueError(f"{run_dir}: no result.json; a back-test needs a completed run") from None
    except ValueError as e:
        raise ValueError(f"{run_dir / 'result.json'}: not a readable JSON record ({e}); rerun the run") from None
    if not isinstance(result, dict) or result.get("status") != "completed":
        status = result.get("status") if isinstance(result, dict) else None
        raise ValueError(f"{run_dir}: run status is {status!r}; a back-test needs a completed run")
    if recipe_path is not None:
        from lab.recipe.format import recipe_sha256

        trained = result.get("recipe_sha256")
        if trained != recipe_sha256(recipe_path):
            why = (f"it was trained from {result.get('recipe')!r}, a different file or version" if trained
                   else "its record names no recipe (trained from a config, or by an older lab)")
            raise ValueError(f"{run_dir} was not trained from {recipe_path}: {why}; back-test the run against "
                             f"the recipe it was trained from")
    bt = compare(recipe, result)
    atomic_write_json(run_dir / "backtest.json", bt)
    return bt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.backtest", description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("run_dir")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from lab.recipe.format import RecipeError, load_recipe
    try:
        bt = backtest_run(load_recipe(args.recipe), args.run_dir, recipe_path=args.recipe)
    except (RecipeError, ValueError, FileNotFoundError) as e:
        print(f"lab.backtest: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(bt, indent=1) if args.json else report(bt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
