"""``python -m lab.recipe SWEEP_DIR... --target-flops C``: build a recipe from sweeps and write it."""

from __future__ import annotations

import argparse
import sys

import lab.recipe
from lab.cli import join_negative_numbers
from lab.recipe.build import build_recipe
from lab.recipe.format import RecipeError, summary, write_recipe


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.recipe", description=lab.recipe.__doc__.split("\n\n")[0])
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
    ap.add_argument("--force", action="store_true", help="write the recipe even when the loss law is ill-posed "
                                                         "(the verdict is written into it)")
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(join_negative_numbers(argv))
    try:
        r = build_recipe(args.sweeps, args.target_flops, args.target_params, args.target_tokens, args.approach,
                         args.bootstrap, args.seed, args.hparams, args.mixing, args.mixing_weights, force=args.force)
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
