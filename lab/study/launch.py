"""How a study spends compute: sweeps through ``python -m lab.sweep`` and the full-size runs through
``python -m lab.train``, each in its own process, so a study is made of the same runs a user
would launch by hand (same folders, records, resume and failure handling).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

# the sweep's own folder-name excludes (sweeps/sweep_base.yaml), to which a study adds its fixed settings
BASE_EXCLUDES = ("data.corpus", "data.root", "train.progress", "train.threads", "design.hparams")


@dataclass(frozen=True)
class SweepRun:
    """What one sweep of a stage planned and what it cost."""

    sweep_dir: str
    jobs: int
    planned_flops: float
    wall_s: float
    completed: int
    failed: int


class StageInputError(ValueError):
    """A stage's input (a sweep folder, a law file, a mixture) cannot serve it: exit 2, nothing run."""


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+")


def sweep_command(design: str, sweep_dir: Path, axes: Sequence[str], fixed: Sequence[str]) -> list[str]:
    """The ``lab.sweep`` command line: ``axes`` are swept (a, b values), ``fixed`` are shared and kept
    out of the run folders' names (a study's folders are named by their axes alone)."""
    return [sys.executable, "-m", "lab.sweep", "-cn", design, "-m", f"hydra.sweep.dir={sweep_dir}",
            _excludes(fixed), *fixed, *axes]


def _exclude_keys(fixed: Sequence[str]) -> list[str]:
    return list(BASE_EXCLUDES) + sorted({_key(o) for o in fixed} - set(BASE_EXCLUDES))


def _excludes(fixed: Sequence[str]) -> str:
    return f"hydra.job.config.override_dirname.exclude_keys=[{','.join(_exclude_keys(fixed))}]"


def plan_flops(design: str, axes: Sequence[str], fixed: Sequence[str], probe: bool = False
               ) -> tuple[int, float, float | None]:
    """(jobs, FLOPs, probed FLOP/s of all local workers or None) of the sweep, cooldown branches
    included; raises ValueError on a bad design."""
    from lab.sweep import default_workers, plan_jobs, speed_probe

    jobs = plan_jobs(design, [*fixed, *axes], _exclude_keys(fixed))
    total = 0.0
    for j in jobs:  # a branch of D tokens costs its decay, decay * D, beyond the main run
        total += j.spec.flops + sum(j.cfg.train.decay * d * j.spec.flops / j.spec.tokens for d in j.spec.cooldowns)
    rate = speed_probe([j.spec for j in jobs], jobs[0].cfg) * default_workers() if probe and jobs else None
    return len(jobs), float(total), rate


def run_sweep(design: str, sweep_dir: Path, axes: Sequence[str], fixed: Sequence[str], label: str,
              rate: float | None) -> SweepRun:
    """Plan, say the ETA, run the sweep (relaunching skips finished runs) and count its outcome."""
    from lab.sweep import sweep_status

    jobs, flops, probed = plan_flops(design, axes, fixed, probe=rate is None)
    how = "measured on this study's runs so far"
    if rate is None and probed:  # a probe times steps only: start-up and evaluation roughly halve it
        rate, how = probed / 2, "a speed probe, halved for start-up and evaluation"
    eta = f", ETA {flops / rate / 60:.1f} min at {rate / 1e9:.0f} GFLOP/s ({how})" if rate else ""
    print(f"[study] {label}: {jobs} runs, {flops:.3g} FLOPs{eta} -> {sweep_dir}", flush=True)
    cmd = sweep_command(design, sweep_dir, axes, fixed)
    t0 = time.time()
    proc = subprocess.run(cmd, env={**os.environ, "LAB_SWEEP_PROBE": "0", "HYDRA_FULL_ERROR": "1"})
    wall = time.time() - t0
    c = sweep_status(sweep_dir) if sweep_dir.is_dir() else {}
    if proc.returncode == 2:
        raise StageInputError(f"{label}: the sweep refused its configuration (see the error above): "
                              + " ".join(cmd[3:]))
    return SweepRun(str(sweep_dir), jobs, flops, wall, c.get("completed", 0), c.get("failed", 0) + c.get("diverged", 0))


def train_recipe(recipe: Path, run_dir: Path, seed: int, threads: int) -> subprocess.Popen:
    """Start one full-size run of the recipe (``python -m lab.train recipe=...``, which back-tests it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / "train.log", "a", encoding="utf-8")
    cmd = [sys.executable, "-m", "lab.train", f"recipe={recipe}", f"run_dir={run_dir}", f"train.seed={seed}",
           f"train.threads={threads}", "train.progress=false"]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def completed_result(run_dir: Path) -> dict | None:
    """The run's record when it completed, else None."""
    try:
        res = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return res if isinstance(res, dict) and res.get("status") == "completed" else None
