"""Recipes: the fitted laws of one or more sweeps, turned into the settings of the full-size run.

``python -m lab.recipe SWEEP_DIR... --target-flops C [--out recipe.yaml]`` (or ``--target-params N``
/ ``--target-tokens D``) fits the loss law to the sweeps' runs, picks the compute-optimal N and D
at the target in the lab's own FLOP convention, turns N into a shape with the sweeps' shape rule,
and writes one YAML file: shape, N, D, batch (tokens, sequences, micro-batch), peak LR and schedule,
mixture, the predicted final loss overall and per domain with bootstrap intervals, and provenance
(sweeps, fits and their constants, lab version). Beside it, ``<name>.sbatch`` launches the run on
a Slurm cluster with torchrun. The run itself is ``python -m lab.train recipe=recipe.yaml``
(``torchrun --nproc_per_node=K -m lab.train recipe=...`` for data parallel); when it finishes,
``python -m lab.train`` back-tests the prediction (:mod:`lab.backtest`).

Two layers: :mod:`lab.recipe.format` is the file format the trainer reads (typed, validated; no
pandas, no fitting library), exported here; :mod:`lab.recipe.build` (fits -> recipe) sits above
the fits and is imported only by who builds recipes (``python -m lab.recipe``, the demo).
"""

from lab.recipe.format import (
    FORMAT,
    DataSpec,
    ModelSpec,
    Prediction,
    Recipe,
    RecipeError,
    TrainSpec,
    apply_recipe,
    load_recipe,
    slurm_script,
    summary,
    write_recipe,
)

__all__ = ["FORMAT", "DataSpec", "ModelSpec", "Prediction", "Recipe", "RecipeError", "TrainSpec", "apply_recipe",
           "load_recipe", "slurm_script", "summary", "write_recipe"]
