"""Checks of what a user hands a stage (sweep folders, a law file, a mixture), all made before any
compute is spent: each failure is one line naming the input and what to give instead (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab.study.launch import StageInputError

# the fewest completed runs each stage's law can be fitted to (cooldown branches count as runs here)
MIN_RUNS = {"hparams_sweeps": 8, "mixing_sweeps": 6, "loss_sweeps": 6}
WHAT = {"hparams_sweeps": ("stage a (hparams)", "a batch/LR law", True),
        "mixing_sweeps": ("stage b (mixture)", "the mixing law", False),
        "loss_sweeps": ("stage c (loss)", "a loss law", True)}


def check_sweeps(key: str, dirs: list[str]) -> None:
    """The folders exist, hold enough completed runs, and of one tokenizer, seq_len, corpus (and mixture)."""
    from lab.fit import FitError
    from lab.fit.engine.points import require_one_setting
    from lab.results import load_runs

    stage, what, one_mixture = WHAT[key]
    flag = "--" + key.replace("_", "-")
    for d in dirs:
        if not Path(d).is_dir():
            raise StageInputError(f"{flag} {d}: not a folder (give the sweep folders {stage} should fit)")
    try:
        runs = load_runs(*dirs)
    except ValueError as e:
        raise StageInputError(f"{flag}: {e}") from None
    if runs.empty:
        raise StageInputError(f"{flag} {' '.join(dirs)}: no runs found (a sweep folder holds one folder per run)")
    ok = runs[runs["status"] == "completed"] if "status" in runs.columns else runs
    if ok.empty:
        said = ", ".join(f"{n} {s}" for s, n in runs["status"].astype(str).value_counts().items())
        raise StageInputError(f"{flag} {' '.join(dirs)}: no completed run ({said}); {stage} fits completed runs only")
    if len(ok) < MIN_RUNS[key]:
        raise StageInputError(f"{flag} {' '.join(dirs)}: {len(ok)} completed run(s); {stage} needs at least "
                              f"{MIN_RUNS[key]} to fit {what}")
    try:
        require_one_setting(ok, f"{flag} {' '.join(dirs)}", what, mixture=one_mixture)
    except FitError as e:
        raise StageInputError(str(e)) from None


def check_law(path: str) -> str:
    from lab.fit.hparams import load_hparam_law

    try:
        load_hparam_law(path)
    except ValueError as e:
        raise StageInputError(str(e).replace("design.hparams", "--hparams-law")) from None
    return str(Path(path).resolve())


def parse_mixture(text: str) -> Any:
    """'natural', 'uniform' or a JSON mapping {domain: share} (checked against the corpus at launch)."""
    if text in ("natural", "uniform"):
        return text
    try:
        mix = json.loads(text)
    except ValueError:
        raise StageInputError(f"--mixture {text!r}: give natural, uniform or a JSON mapping like "
                              "'{\"prose_en\": 0.5, \"code_python\": 0.5}'") from None
    if not isinstance(mix, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in mix.values()) or \
            abs(sum(mix.values()) - 1) > 1e-3:
        raise StageInputError(f"--mixture {text!r}: shares must be non-negative numbers summing to 1")
    return {str(k): float(v) for k, v in mix.items()}


def check_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """Every given input checked (sweeps, law file, mixture); returns them normalised."""
    out = dict(inputs)
    for key in MIN_RUNS:
        if out.get(key):
            check_sweeps(key, out[key])
            out[key] = [str(Path(d).resolve()) for d in out[key]]
    if out.get("hparams_law"):
        out["hparams_law"] = check_law(out["hparams_law"])
    if out.get("mixture"):
        out["mixture"] = parse_mixture(out["mixture"])
    return out
