"""``python -m lab.study [--quick] [--out DIR] [--seed S] [--stages LIST] [inputs]``: the staged study.

Runs stages a-g (:mod:`lab.study.stages`) into ``--out`` (default ``runs/study`` or
``runs/study-quick``); relaunching the same command resumes. ``--stages`` runs some of them (letters
or names: ``--stages a`` or ``--stages loss,recipe``); a stage whose inputs come from a skipped stage
reads them from ``study.json`` or from the inputs given here (``--hparams-sweeps``, ``--mixing-sweeps``,
``--loss-sweeps`` fit existing sweep folders instead of running the stage's own sweep;
``--hparams-law FILE``, ``--mixture JSON``). Exit status 2 for bad input (said before compute is
spent), 1 when a stage fails.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lab.study.state import LETTERS, STAGES

BY_LETTER = {v: k for k, v in LETTERS.items()}


def parse_stages(text: str | None) -> list[str]:
    if not text:
        return list(STAGES)
    out = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        name = BY_LETTER.get(item, item)
        if name not in STAGES:
            raise ValueError(f"--stages {item!r}: not a stage; give letters a-g or names ({', '.join(STAGES)})")
        out.append(name)
    return [s for s in STAGES if s in out]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lab.study", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the quick preset: same stages, cruder laws, < 10 min")
    ap.add_argument("--out", help="study folder (default runs/study, runs/study-quick)")
    ap.add_argument("--seed", type=int, default=0, help="shift every seed of the study (a rerun for stability)")
    ap.add_argument("--corpus", help="data.corpus of every run (default: builtin; a built corpus name or folder)")
    ap.add_argument("--stages", help="which stages, e.g. a,b or loss,recipe (default: all)")
    ap.add_argument("--full-seeds", type=int, help="seeds of the full-size run (default 2); relaunching a finished "
                                                   "study with more trains only the new ones and redoes f-g")
    ap.add_argument("--no-pack", action="store_true", help="train every sweep run in its own process (sweeps pack "
                    "same-shape runs into one process by default: lab.pack)")
    ap.add_argument("--force", action="store_true", help="write the recipe even when the loss law is ill-posed")
    ap.add_argument("--hparams-sweeps", nargs="+", help="fit these batch x LR sweeps in stage a instead of running one")
    ap.add_argument("--mixing-sweeps", nargs="+", help="fit these mixture sweeps in stage b")
    ap.add_argument("--loss-sweeps", nargs="+", help="fit these loss sweeps in stages c-d")
    ap.add_argument("--hparams-law", help="a batch/LR law JSON (python -m lab.fit hparams --json) for stages b-c")
    ap.add_argument("--mixture", help="the mixture for stage c: natural, uniform or a JSON mapping")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lab.study.config import DEFAULT, QUICK
    from lab.study.inputs import check_inputs
    from lab.study.launch import StageInputError
    from lab.study.run import run_study
    from lab.study.stages import Study
    from lab.study.state import StudyState

    from dataclasses import replace

    cfg = (QUICK if args.quick else DEFAULT).with_seed(args.seed)
    if args.corpus:
        cfg = replace(cfg, corpus=args.corpus)
    if args.full_seeds is not None:
        if args.full_seeds < 1:
            print(f"error: --full-seeds must be >= 1, got {args.full_seeds}", file=sys.stderr)
            return 2
        cfg = replace(cfg, full_seeds=args.full_seeds)
    out = Path(args.out or ("runs/study-quick" if args.quick else "runs/study")).resolve()
    keys = ("hparams_sweeps", "mixing_sweeps", "loss_sweeps", "hparams_law", "mixture")
    try:
        stages = parse_stages(args.stages)
        inputs = check_inputs({k: getattr(args, k) for k in keys})
        state = StudyState.open(out, cfg.to_json())
    except (ValueError, StageInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[study] {cfg.name} study, seed {cfg.seed}: stages {', '.join(LETTERS[s] for s in stages)} -> {out}",
          flush=True)
    from lab.compile import use_cache

    use_cache(out / ".compile_cache")  # every sweep and full-size run of the study compiles into one cache
    if args.no_pack:
        os.environ["LAB_PACK"] = "0"  # read by every lab.sweep the study starts
    if "hparams" in stages or "mixture" in stages or "loss" in stages:
        from lab.data.build import ensure_corpus

        ensure_corpus(cfg.corpus)
    try:
        run_study(Study(cfg, out, state, inputs, args.force), stages)
    except StageInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
