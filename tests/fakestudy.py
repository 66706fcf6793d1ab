"""A synthetic study folder (what ``python -m lab.study`` writes), without training.

:func:`fake_study` writes the run records of the study's three sweeps as :mod:`lab.train` writes
them (``config.yaml`` + ``result.json``, WSD cooldown branches included; records from
:func:`lab.record.result_record` / :func:`lab.record.failure_record`), with losses from known laws
and small noise (``conftest.LAW``, as :func:`conftest.fake_sweep`), and then runs the study's *own*
stage functions (:mod:`lab.study.stages`) on them: the batch/LR law file, the mixture, the recipe
(:func:`lab.recipe.build.build_recipe`, forced), the back-test and ``summary.json`` are the real
code's output. Only stage e is faked: the recipe's runs are written with a loss from the same laws at
the recipe's N, D and mixture, and back-tested as ``python -m lab.train recipe=...`` does
(:func:`lab.backtest.after_recipe_run`).

The folder::

    study.json          config (StudyConfig fields, plus target_flops) and stages a-g: status, wall_s, outputs
    summary.json        lab.study.run.summarize (stage g, without the HTML report)
    a_hparams/          batch x LR grid: 3 sizes x 5 batches x 5 LRs (75 runs); each a WSD run to the larger of
                        2 budgets with a cooldown branch at the smaller one's D: a cell per (N, D)
    a_hparams_law.json  the form-ND batch/LR law as stage a resolves it
    b_mixture/          the axial mixture design (9 mixtures of the fixture's 4 domains) at 3 sizes, D = TPP N
    c_loss/             IsoFLOP ladder: 9 sizes x 2 seeds (18 runs), 4 budgets; one WSD run per size and seed to
                        the largest budget it serves, cooldown branches at the smaller ones; every budget's
                        profile has 6-7 sizes around an interior minimum; batch and LR from the stage-a law
    recipe.yaml         (+ recipe.sbatch) stage d's recipe
    e_full/seed<k>/     the recipe's run per seed (k = 100 seed, 100 seed + 1): config.yaml, result.json, backtest.json
    .corpus/            a fake corpus cache (token counts only) the runs name as data.root: the mixing loader's
                        natural mixture and epoch caps, the same on every machine

The laws (all known, so tests can check what the fits recover):

* loss: ``conftest.law_loss(N, D)`` (``conftest.LAW``);
* per domain i at mixture r: ``law_loss(N, D) * DOMAIN_FACTORS[i] * (1 + MIX_K exp(-MIX_T r_i)) /
  (1 + MIX_K exp(-MIX_T / 4))`` (the data mixing law's form, Ye et al. 2024; ``law_loss * factor`` at
  the uniform mixture); ``loss_val`` is their mean (the study's ``val_weights=uniform``);
* batch/LR (:data:`HP_LAW`): ``lr_opt = lr_coef N^lr_N_exp D^lr_D_exp``, ``B_opt = B_coef D^B_D_exp``;
  stage a's losses are the above times the bowl ``1 + BOWL_B ln(B/B_opt)^2 + BOWL_LR ln(lr/lr_opt)^2``.

Building one takes the real fits' time (~10-20 s on 2 busy cores: the mixing law and the recipe
dominate), so each (seed, failed_runs) study is built once per process into a temporary folder and
copied, its paths rewritten, for every call (< 1 s); ``cache=False`` builds in place.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

try:  # tests import it as `from conftest import ...` (pytest puts tests/ on sys.path)
    from conftest import DOMAIN_FACTORS, LAW, law_loss
except ImportError:  # pragma: no cover - imported from the repository root
    from tests.conftest import DOMAIN_FACTORS, LAW, law_loss

from lab.config import (
    DataConfig,
    DesignConfig,
    ModelConfig,
    RunConfig,
    SweepConfig,
    TrainConfig,
)
from lab.counting import counts, steps_for_tokens
from lab.designs import ShapeRule, axial_mixtures
from lab.plan import RunPlan
from lab.record import failure_record, result_record
from lab.study.config import HparamStage, LossStage, MixtureStage, StudyConfig
from lab.study.launch import SweepRun
from lab.study.state import LETTERS, STAGES, StudyState

__all__ = [
    "DOMAINS",
    "HP_BUDGETS",
    "HP_LAW",
    "HP_SIZES",
    "LAW",
    "LOSS_BUDGETS",
    "LOSS_SIZES",
    "MIX_K",
    "MIX_SIZES",
    "MIX_T",
    "RULE",
    "SEQ_LEN",
    "STAGE_FILES",
    "TPP",
    "domain_losses",
    "fake_study",
    "hp_optimum",
    "study_config",
    "true_loss",
]

SEQ_LEN = 64
RULE = ShapeRule(vocab_size=256, seq_len=SEQ_LEN, aspect=16, head_dim=16)  # conftest.fake_sweep's
CORPUS = "fixture"
DOMAINS = sorted(DOMAIN_FACTORS)
UNIFORM = {d: 1.0 / len(DOMAINS) for d in DOMAINS}
CORPUS_TOKENS = {"code_python": 3.0e9, "multilingual": 2.0e9, "prose_en": 4.0e9, "tech_docs": 1.0e9}
CORPUS_ROOT = ".corpus"

HP_LAW = {"lr_coef": 0.4, "lr_N_exp": -0.35, "lr_D_exp": -0.05, "B_coef": 8.0, "B_D_exp": 0.3}
BOWL_B, BOWL_LR = 0.004, 0.006
MIX_K, MIX_T = 1.0, 4.0

# design sizes (targets for RULE.shape, each a distinct shape) and budgets (FLOPs, the lab's convention)
HP_SIZES = (7.0e3, 2.0e4, 5.8e4)                          # N = 8272, 26784, 55536
HP_BUDGETS = (1.0e12, 4.0e12)
HP_BATCHES = (256, 512, 1024, 2048, 4096)                 # every cell's B_opt lies inside
HP_LRS = (1.5e-3, 3e-3, 6e-3, 1.2e-2, 2.4e-2)             # every cell's lr_opt lies inside
MIX_SIZES = (7.0e3, 2.0e4, 5.8e4)
TPP = 500.0                                               # D/N of the mixture runs and of the study's prior
LOSS_SIZES = (7.0e3, 1.1e4, 2.0e4, 3.6e4, 5.8e4, 7.2e4, 1.05e5, 1.55e5, 1.9e5)
LOSS_BUDGETS = (2.5e12, 5.0e12, 1.0e13, 2.0e13)
LOSS_SPREAD = 4.0                                         # a size serves the budgets whose optimum is within 4x
LOSS_SEEDS = 2
FULL_SEEDS = 2
WARMUP, DECAY, MIN_LR_RATIO = 0.02, 0.2, 0.1
NOISE = {"hparams": 0.0005, "mixture": 0.002, "loss": 0.002, "full": 0.002}  # lognormal sd of a run's loss
FAKE_RATE = 5e11                                          # FLOP/s behind the runs' fake wall times (minutes a stage)
STAGE_WALL = {"recipe": 4.0, "backtest": 0.5, "summary": 0.1}  # s; sweep stages: their runs' wall times

# what each stage leaves in the folder (a study stopped before a stage has none of it)
STAGE_FILES = {"hparams": ("a_hparams", "a_hparams_law.json"), "mixture": ("b_mixture",), "loss": ("c_loss",),
               "recipe": ("recipe.yaml", "recipe.sbatch"), "full": ("e_full",), "backtest": (),
               "summary": ("summary.json",)}


# ----------------------------------------------------------------------------------------------
# laws
# ----------------------------------------------------------------------------------------------

def domain_losses(N: float, D: float, mixture: dict[str, float]) -> dict[str, float]:
    """The true per-domain validation loss of N params trained on D tokens of ``mixture``."""
    base = law_loss(N, D)
    ref = 1 + MIX_K * math.exp(-MIX_T / len(DOMAINS))
    return {d: base * f * (1 + MIX_K * math.exp(-MIX_T * mixture.get(d, 0.0))) / ref
            for d, f in sorted(DOMAIN_FACTORS.items())}


def true_loss(N: float, D: float, mixture: dict[str, float]) -> float:
    """The true ``loss_val`` (uniform validation weights): the mean of the domain losses."""
    return float(np.mean(list(domain_losses(N, D, mixture).values())))


def hp_optimum(N: float, D: float) -> tuple[float, float]:
    """(B_opt in tokens, lr_opt) of the known batch/LR law."""
    h = HP_LAW
    return h["B_coef"] * D ** h["B_D_exp"], h["lr_coef"] * N ** h["lr_N_exp"] * D ** h["lr_D_exp"]


def _opt_size(C: float, shapes: Sequence[Any]) -> float:
    """The loss-optimal N at C among ``shapes``."""
    losses = [law_loss(counts(s)["params"], C / counts(s)["flops_per_token"]) for s in shapes]
    return float(counts(shapes[int(np.argmin(losses))])["params"])


# ----------------------------------------------------------------------------------------------
# run records, as lab.train writes them
# ----------------------------------------------------------------------------------------------

def _rng(seed: int, stage: str, j: int) -> np.random.Generator:
    """Each run's own noise: a run's losses do not depend on which other runs were written."""
    return np.random.default_rng([int(seed), STAGES.index(stage), int(j)])


def _dump_yaml(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)


def _run_name(axes: dict[str, Any]) -> str:
    """The run folder's name as lab.sweep gives it (Hydra's override_dirname): its axes, sorted."""
    return ",".join(f"{k}={v}" for k, v in sorted(axes.items()))


def _config(run_dir: Path, shape, batch: int, lr: float, seed: int, mixture: Any, design: DesignConfig | None,
            data_root: str | None, tokens: float | None = None, flops: float | None = None,
            cooldowns: Iterable[float] = (), tags: dict[str, Any] | None = None) -> SweepConfig:
    model = ModelConfig(depth=None, aspect=RULE.aspect, head_dim=RULE.head_dim, num_layers=shape.num_layers,
                        d_model=shape.d_model, num_heads=shape.num_heads, num_kv_heads=shape.num_kv_heads,
                        d_ff=shape.d_ff)
    data = DataConfig(corpus=CORPUS, seq_len=SEQ_LEN, val_tokens=4096, mixture=mixture, val_weights="uniform",
                      root=data_root)
    train = TrainConfig(tokens=tokens, flops=flops, batch_tokens=int(batch), lr=float(lr), schedule="wsd",
                        warmup=WARMUP, decay=DECAY, min_lr_ratio=MIN_LR_RATIO, cooldowns=list(cooldowns),
                        seed=int(seed), threads=1, progress=False)
    return SweepConfig(model=model, data=data, train=train, run_dir=str(run_dir), tags=dict(tags or {}),
                       design=design or DesignConfig())


def _plan(cfg: RunConfig, shape, mixture: dict[str, float], target_tokens: float,
          branch_tokens: Iterable[float] = ()) -> RunPlan:
    """The run's :class:`lab.plan.RunPlan` without a corpus: counts, steps and cooldown branches."""
    t = cfg.train
    c = counts(shape)
    steps = steps_for_tokens(target_tokens, t.batch_tokens, "fake run")
    branches = {}
    for d in sorted(branch_tokens):
        end = steps_for_tokens(d, t.batch_tokens, "fake branch")
        branches[max(1, end - max(1, round(t.decay * end)))] = end
    tokens = float(steps * t.batch_tokens)
    return RunPlan(shape=shape, counts=c, mixture=dict(mixture), val_weights=dict(UNIFORM), eval_domains=list(DOMAINS),
                   batch_seqs=t.batch_tokens // SEQ_LEN, micro_batch=t.batch_tokens // SEQ_LEN, grad_accum=1,
                   target_tokens=float(target_tokens), steps=steps, tokens=tokens, flops=tokens * c["flops_per_token"],
                   eval_every=max(1, steps // 20), log_every=max(1, steps // 100), ckpt_every=max(1, steps // 10),
                   branches=branches)


def _eval(losses: dict[str, float]) -> dict[str, float]:
    """An evaluation as lab.train's ``evaluate`` returns it (byte tokens: bpb = loss / ln 2)."""
    lv = float(np.mean(list(losses.values())))
    ev = {"loss_val": lv, "bpb_val": lv / math.log(2)}
    for d, v in losses.items():
        ev[f"loss_val_{d}"], ev[f"bpb_val_{d}"] = float(v), float(v) / math.log(2)
    return ev


def _noisy(losses: dict[str, float], rng: np.random.Generator, noise: float, scale: float = 1.0) -> dict[str, float]:
    """Losses times one run-wide factor (seed noise) and a smaller per-domain one, and ``scale`` (a bowl)."""
    common = math.exp(rng.normal(0, noise))
    return {d: v * scale * common * math.exp(rng.normal(0, noise / 3)) for d, v in losses.items()}


def _write_config(cfg: RunConfig, plan: RunPlan) -> None:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(_dump_yaml({"config": asdict(cfg), "derived": plan.derived()}))


def write_run(cfg: RunConfig, plan: RunPlan, loss_at: Callable[[float], dict[str, float]],
              recipe_sha: str | None = None) -> dict[str, Any]:
    """A completed run's ``config.yaml`` and ``result.json`` (:func:`lab.record.result_record`);
    ``loss_at(D)`` gives the domain losses at the run's end and at each cooldown branch's."""
    _write_config(cfg, plan)
    fpt, B = plan.flops_per_token, cfg.train.batch_tokens
    cooldowns = []
    for start, end in sorted(plan.branches.items()):
        tokens = float(end * B)
        cooldowns.append({"branch_start": start, "step": end, "tokens": tokens, "flops": tokens * fpt,
                          "branch_flops": (end - start) * B * fpt, **_eval(loss_at(tokens))})
    ev = _eval(loss_at(plan.tokens))
    wall = (plan.flops + sum(c["branch_flops"] for c in cooldowns)) / FAKE_RATE
    run = {"status": "completed", "error": None, "run_dir": cfg.run_dir, "steps": plan.steps, "wall_s": wall,
           "corpus": CORPUS, "tokenizer": "byte", "vocab_size": RULE.vocab_size, "cooldowns": cooldowns,
           "corpus_fingerprint": "fake-study", "recipe_sha256": recipe_sha}
    last = {"loss": ev["loss_val"] * 1.01, "lr": cfg.train.lr * cfg.train.min_lr_ratio, "grad_norm": 0.4, "eval": ev}
    hardware = {"device": "cpu", "dtype": "float32", "threads": 1, "world_size": 1, "parallel": "none"}
    result = result_record(cfg, plan, run, {"resumes": 0}, last, hardware)
    (Path(cfg.run_dir) / "result.json").write_text(json.dumps(result))
    return result


def write_failed_run(cfg: SweepConfig, plan: RunPlan, message: str) -> dict[str, Any]:
    """A run that raised mid-training: its ``config.yaml`` and the failure record lab.train writes."""
    _write_config(cfg, plan)
    try:
        raise RuntimeError(message)
    except RuntimeError as e:  # failure_record reads the traceback of the exception being handled
        rec = failure_record(cfg, e, time.time() - 12.5)
    (Path(cfg.run_dir) / "result.json").write_text(json.dumps(rec))
    return rec


def write_corpus_meta(root: Path) -> str:
    """The fake corpus cache's ``tokens/byte/meta.json`` under ``root``; returns the cache root."""
    from lab.paths import corpus_dir

    cache = Path(root) / CORPUS_ROOT
    meta = corpus_dir(CORPUS, cache) / "tokens" / "byte" / "meta.json"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"domains": {d: {"train": {"tokens": t}, "val": {"tokens": 4096}}
                                            for d, t in CORPUS_TOKENS.items()}}))
    return str(cache)


# ----------------------------------------------------------------------------------------------
# the three sweeps
# ----------------------------------------------------------------------------------------------

def _sweep_run(sweep: Path, results: list[dict[str, Any]], failed: int = 0) -> dict[str, Any]:
    """What ``Study.sweep`` records of a sweep (:class:`lab.study.launch.SweepRun`)."""
    done = [r for r in results if r.get("status") == "completed"]
    planned = sum(float(r["flops"]) + sum(c["branch_flops"] for c in r["cooldowns"]) for r in done)
    return asdict(SweepRun(str(sweep), len(results), planned, sum(r["wall_s"] for r in results), len(done), failed))


def hparams_sweep(sweep: Path, seed: int, data_root: str | None) -> list[dict[str, Any]]:
    """Stage a: a batch x LR grid at each size, each run a WSD run to the larger budget with a cooldown
    branch at the smaller one's D. Loss: the loss law times a bowl around the known B_opt and lr_opt."""
    out = []
    for k, n in enumerate(HP_SIZES):
        shape = RULE.shape(n)
        c = counts(shape)
        N, fpt = float(c["params"]), c["flops_per_token"]
        for B in HP_BATCHES:
            for lr in HP_LRS:
                rng = _rng(seed, "hparams", len(out))
                branch = [float(steps_for_tokens(C / fpt, B, "branch") * B) for C in HP_BUDGETS[:-1]]
                design = DesignConfig(kind="isoflop_wsd", size=k, sizes=list(HP_SIZES), budgets=list(HP_BUDGETS),
                                      spread=16.0, tokens_per_param=TPP, aspect=RULE.aspect, head_dim=RULE.head_dim)
                tags = {"design": "isoflop_wsd", "size_index": k, "budgets": ",".join(f"{C:.4g}" for C in HP_BUDGETS)}
                run_dir = sweep / _run_name({"design.size": k, "train.batch_tokens": B, "train.lr": lr})
                cfg = _config(run_dir, shape, B, lr, seed * 100, "uniform", design, data_root, flops=HP_BUDGETS[-1],
                              cooldowns=branch, tags=tags)

                def loss_at(D, N=N, B=B, lr=lr, rng=rng):
                    b_opt, lr_opt = hp_optimum(N, D)
                    bowl = 1 + BOWL_B * math.log(B / b_opt) ** 2 + BOWL_LR * math.log(lr / lr_opt) ** 2
                    return _noisy(domain_losses(N, D, UNIFORM), rng, NOISE["hparams"], bowl)
                out.append(write_run(cfg, _plan(cfg, shape, UNIFORM, HP_BUDGETS[-1] / fpt, branch), loss_at))
    return out


def _law_point(law_params: dict[str, float], N: float, D: float) -> tuple[int, float]:
    """Batch (tokens, power-of-two sequences) and LR of the stage-a law at (N, D), as lab.sweep sets them."""
    from lab.fit.hparams import batch_for, predict_hparams

    b_opt, lr = predict_hparams(law_params, "ND", N=N, D=D)
    return batch_for(b_opt, SEQ_LEN), float(lr)


def mixture_sweep(sweep: Path, seed: int, data_root: str | None, law: str, law_params: dict[str, float]
                  ) -> list[dict[str, Any]]:
    """Stage b: the axial design (9 mixtures of the 4 domains) at each size, D = TPP N, at the law's B, lr."""
    mixes = axial_mixtures(DOMAINS)
    out = []
    for i, n in enumerate(MIX_SIZES):
        shape = RULE.shape(n)
        N = float(counts(shape)["params"])
        B, lr = _law_point(law_params, N, TPP * N)
        for j, mix in enumerate(mixes):
            rng = _rng(seed, "mixture", len(out))
            design = DesignConfig(kind="mixture", size=i, mixture=j, sizes=list(MIX_SIZES), n_mixtures=len(mixes),
                                  mixtures="axial", seed=seed, tokens_per_param=TPP, aspect=RULE.aspect,
                                  head_dim=RULE.head_dim, hparams=law)
            tags = {"design": "mixture", "mixture_index": j, "size_index": i, "hparams_law": law}
            cfg = _config(sweep / _run_name({"design.mixture": j, "design.size": i}), shape, B, lr, seed * 100,
                          dict(mix), design, data_root, tokens=TPP * N, tags=tags)
            out.append(write_run(cfg, _plan(cfg, shape, mix, TPP * N),
                                 lambda D, N=N, mix=mix, rng=rng: _noisy(domain_losses(N, D, mix), rng, NOISE["mixture"])))
    return out


def loss_sweep(sweep: Path, seed: int, data_root: str | None, mixture: dict[str, float], law: str,
               law_params: dict[str, float], failed_runs: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Stage c: one WSD run per size and seed to the largest budget it serves, cooldown branches at the
    others. ``failed_runs`` of them are failed records (second-seed runs first: every profile keeps
    its sizes); the others are the same runs, same losses, as without failures."""
    shapes = [RULE.shape(n) for n in LOSS_SIZES]
    opt = {C: _opt_size(C, shapes) for C in LOSS_BUDGETS}
    jobs = []
    for k, shape in enumerate(shapes):
        c = counts(shape)
        N, fpt = float(c["params"]), c["flops_per_token"]
        served = [C for C in LOSS_BUDGETS if 1 / LOSS_SPREAD <= N / opt[C] <= LOSS_SPREAD]
        if served:
            D_all = [C / fpt for C in served]
            B, lr = _law_point(law_params, N, float(np.exp(np.mean(np.log(D_all)))))
            branch = [float(steps_for_tokens(d, B, "branch") * B) for d in D_all[:-1]]
            jobs += [(i, k, shape, N, fpt, served, B, lr, branch) for i in range(LOSS_SEEDS)]
    if failed_runs > len(jobs) or failed_runs < 0:
        raise ValueError(f"failed_runs={failed_runs}: the loss ladder has {len(jobs)} runs")
    fail = set(sorted(range(len(jobs)), key=lambda j: (-jobs[j][0], j))[:failed_runs])
    out = []
    for j, (i, k, shape, N, fpt, served, B, lr, branch) in enumerate(jobs):
        train_seed = seed * 100 + i
        design = DesignConfig(kind="isoflop_wsd", size=k, sizes=list(LOSS_SIZES), budgets=list(LOSS_BUDGETS),
                              spread=LOSS_SPREAD, tokens_per_param=TPP, aspect=RULE.aspect, head_dim=RULE.head_dim,
                              hparams=law)
        tags = {"design": "isoflop_wsd", "size_index": k, "budgets": ",".join(f"{C:.4g}" for C in served),
                "hparams_law": law, "B_opt_law": float(B), "lr_opt_law": lr}
        cfg = _config(sweep / _run_name({"design.size": k, "train.seed": train_seed}), shape, B, lr, train_seed,
                      dict(mixture), design, data_root, flops=served[-1], cooldowns=branch, tags=tags)
        plan = _plan(cfg, shape, mixture, served[-1] / fpt, branch)
        if j in fail:
            out.append(write_failed_run(cfg, plan, f"synthetic failure (fake_study): the worker was lost at step "
                                                   f"{plan.steps // 3} of {plan.steps}"))
        else:
            rng = _rng(seed, "loss", j)
            out.append(write_run(cfg, plan, lambda D, N=N, rng=rng: _noisy(domain_losses(N, D, mixture), rng,
                                                                           NOISE["loss"])))
    return out, len(fail)


# ----------------------------------------------------------------------------------------------
# the study
# ----------------------------------------------------------------------------------------------

def study_config(seed: int = 0) -> StudyConfig:
    """The StudyConfig the fake study records (its stages' sizes, budgets and grids are the fakes')."""
    return StudyConfig(
        name="fake", seed=int(seed), corpus=CORPUS, seq_len=SEQ_LEN, tokens_per_param=TPP, warmup=WARMUP, decay=DECAY,
        hparams=HparamStage(sizes=HP_SIZES, budgets=HP_BUDGETS, spread=16.0, batches=HP_BATCHES, lrs=HP_LRS,
                            widen_rounds=0, min_batch=HP_BATCHES[0]),
        mixture=MixtureStage(sizes=MIX_SIZES, design="axial", n_mixtures=1 + 2 * len(DOMAINS), tokens_per_param=TPP),
        loss=LossStage(budgets=LOSS_BUDGETS, sizes=LOSS_SIZES, spread=LOSS_SPREAD, seeds=LOSS_SEEDS),
        target_factor=10.0, full_seeds=FULL_SEEDS, bootstrap=50)


def _full_runs(s) -> dict[str, Any]:
    """Stage e without training: each seed's run of the recipe (its config by lab.recipe.apply_recipe),
    its loss from the true laws at the recipe's N, D and mixture, back-tested as lab.train does."""
    from lab.backtest import after_recipe_run
    from lab.counting import shape_from_config
    from lab.recipe import load_recipe
    from lab.recipe.format import apply_recipe, recipe_sha256

    path = Path(s.state.stage("recipe")["recipe"])
    recipe, sha = load_recipe(path), recipe_sha256(path)
    runs, losses, walls, flops = {}, {}, {}, 0.0
    for i in range(s.cfg.full_seeds):
        sd = s.cfg.seed * 100 + i
        run_dir = s.out / "e_full" / f"seed{sd}"
        cfg = apply_recipe(RunConfig(run_dir=str(run_dir), recipe=str(path),
                                     train=TrainConfig(seed=sd, threads=1, progress=False)), recipe)
        shape = shape_from_config(cfg.model, RULE.vocab_size, cfg.data.seq_len)
        mix = dict(cfg.data.mixture) if isinstance(cfg.data.mixture, dict) else dict(UNIFORM)
        plan = _plan(cfg, shape, mix, float(cfg.train.tokens))
        N, rng = float(plan.counts["params"]), _rng(s.cfg.seed, "full", i)
        res = write_run(cfg, plan, lambda D, N=N, mix=mix, rng=rng: _noisy(domain_losses(N, D, mix), rng, NOISE["full"]),
                        recipe_sha=sha)
        after_recipe_run(recipe, res, run_dir)  # backtest.json, and `backtest` in result.json
        runs[str(sd)], losses[str(sd)], walls[str(sd)] = str(run_dir), res["loss_val"], res["wall_s"]
        flops += float(res["flops"])
    return {"runs": runs, "loss_val": losses, "wall_s_runs": walls, "flops": flops}


def _summary(s) -> dict[str, Any]:
    """Stage g as :func:`lab.study.run.stage_summary` writes ``summary.json``, without the HTML report
    (building the report is what tests of this folder do)."""
    from lab.fit.engine.result import to_jsonable
    from lab.study.run import summarize, summary_lines

    doc = summarize(s)
    path = s.out / "summary.json"
    path.write_text(json.dumps(to_jsonable(doc), indent=1))
    for line in summary_lines(doc):
        print(line, flush=True)
    return {"path": str(path), "report": None}


def _build(root: Path, seed: int, failed_runs: int, stages: Sequence[str], quiet: bool = True) -> None:
    """Write the sweeps and run ``stages`` of the study in ``root``; stages already done there are kept
    (a relaunch: its sweeps and records stay as they are)."""
    from lab.study.stages import (
        Study,
        stage_backtest,
        stage_hparams,
        stage_loss,
        stage_mixture,
        stage_recipe,
    )

    cfg = study_config(seed)
    state = StudyState.open(root, {**cfg.to_json(), "target_flops": cfg.target_flops})
    data_root = write_corpus_meta(root)
    sw = {"hparams": root / "a_hparams", "mixture": root / "b_mixture", "loss": root / "c_loss"}
    s = Study(cfg, root, state, {"hparams_sweeps": [str(sw["hparams"])], "mixing_sweeps": [str(sw["mixture"])],
                                 "loss_sweeps": [str(sw["loss"])]}, force=True)

    def law() -> tuple[str, dict[str, float]]:
        return state.stage("hparams")["law"], state.stage("hparams")["params"]

    def write_loss() -> dict[str, Any]:
        res, nfail = loss_sweep(sw["loss"], seed, data_root, state.stage("mixture")["mixture"], *law(),
                                failed_runs=failed_runs)
        return _sweep_run(sw["loss"], res, nfail)

    writers = {"hparams": lambda: _sweep_run(sw["hparams"], hparams_sweep(sw["hparams"], seed, data_root)),
               "mixture": lambda: _sweep_run(sw["mixture"], mixture_sweep(sw["mixture"], seed, data_root, *law())),
               "loss": write_loss}
    funcs = {"hparams": stage_hparams, "mixture": stage_mixture, "loss": stage_loss, "recipe": stage_recipe,
             "full": _full_runs, "backtest": stage_backtest, "summary": _summary}
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        for name in stages:
            if state.done(name):
                continue
            state.record(name, status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S"))
            sweep = writers[name]() if name in writers else None
            if sweep is not None:
                state.record(name, sweeps_run=[sweep])
            out = funcs[name](s)
            wall = (sweep["wall_s"] if sweep else sum(out["wall_s_runs"].values()) if name == "full"
                    else STAGE_WALL[name])
            state.record(name, status="done", wall_s=wall, error=None, **out)


def _truncate(root: Path, stages: Sequence[str]) -> None:
    """The study as it stood after ``stages`` (a prefix of STAGES): later stages' records and files removed."""
    later = [n for n in STAGES if n not in stages]
    state = StudyState(root / "study.json", json.loads((root / "study.json").read_text()))
    for name in later:
        state.doc["stages"].pop(name, None)
        for f in STAGE_FILES[name]:
            p = root / f
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    state.save()


_TEXT = (".json", ".yaml", ".sbatch", ".jsonl")


def _copy(src: Path, dst: Path) -> None:
    """Copy a built study, its absolute paths rewritten (and the full-size runs' recipe hash, which
    changes with the recipe's paths); the results caches (``.lab/``) are left to rebuild."""
    old, new = str(src), str(dst)
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if ".lab" in rel.parts:
            continue
        q = dst / rel
        if p.is_dir():
            q.mkdir(parents=True, exist_ok=True)
        elif p.suffix in _TEXT:
            q.parent.mkdir(parents=True, exist_ok=True)
            q.write_text(p.read_text().replace(old, new))
        else:
            q.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, q)
    if (src / "recipe.yaml").exists():
        sha = lambda f: hashlib.sha256(f.read_bytes()).hexdigest()
        a, b = sha(src / "recipe.yaml"), sha(dst / "recipe.yaml")
        for res in (dst / "e_full").glob("*/result.json") if (dst / "e_full").is_dir() else ():
            res.write_text(res.read_text().replace(a, b))


_TEMPLATES: dict[tuple[int, int], Path] = {}


def _template(seed: int, failed_runs: int) -> Path:
    """The finished study for (seed, failed_runs), built once per process in a temporary folder. With
    failures, stages a-b are the failure-free study's (they do not depend on stage c) and c-g are rerun."""
    key = (int(seed), int(failed_runs))
    if key not in _TEMPLATES:
        base = Path(tempfile.mkdtemp(prefix="lab-fakestudy-"))
        atexit.register(shutil.rmtree, base, True)
        path = base / f"study-s{seed}-f{failed_runs}"
        if failed_runs:
            _copy(_template(seed, 0), path)
            _truncate(path, ("hparams", "mixture"))
        _build(path, seed, failed_runs, STAGES)
        _TEMPLATES[key] = path
    return _TEMPLATES[key]


def fake_study(root: Path, seed: int = 0, failed_runs: int = 0, partial: bool = False,
               stages_done: Sequence[str] | None = None, failed_stage: str | None = None,
               cache: bool = True, quiet: bool = True) -> Path:
    """Write a synthetic study folder at ``root`` (created; it must not hold a study) and return it.

    ``seed``: the study's seed (training seeds ``100 seed + i``) and its noise.
    ``failed_runs``: that many runs of ``c_loss`` recorded failed as lab.train records a run that
    raised (``result.json``: ``status: failed``, ``error``, ``traceback``, ``config``); the fits and the
    recipe use the others.
    ``partial``: the study stopped after stages a-c (no recipe, full-size runs, back-test or summary);
    ``stages_done`` (a prefix of ``lab.study.state.STAGES``, names or letters) says where instead.
    ``failed_stage``: the stage after the done ones is recorded ``failed`` with an error message.
    ``cache``: copy a study built once per process (fast); False builds it in ``root``.
    ``quiet``: swallow what the stage functions print (when building here; a cached build is quiet).
    """
    by_letter = {v: k for k, v in LETTERS.items()}
    if stages_done is None:
        stages_done = ("hparams", "mixture", "loss") if partial else STAGES
    done = [by_letter.get(x, x) for x in stages_done]
    if done != list(STAGES[:len(done)]):
        raise ValueError(f"stages_done={list(stages_done)}: give a prefix of {list(STAGES)}")
    nxt = STAGES[len(done)] if len(done) < len(STAGES) else None
    if failed_stage is not None and (nxt is None or by_letter.get(failed_stage, failed_stage) != nxt):
        raise ValueError(f"failed_stage={failed_stage!r}: only the stage after the done ones ({nxt}) can have failed")
    root = Path(root).resolve()
    if (root / "study.json").exists():
        raise ValueError(f"{root} already holds a study")
    if cache:
        _copy(_template(seed, failed_runs), root)
        _truncate(root, done)
    else:
        root.mkdir(parents=True, exist_ok=True)
        _build(root, seed, failed_runs, done, quiet)
    if failed_stage is not None:
        state = StudyState(root / "study.json", json.loads((root / "study.json").read_text()))
        state.record(nxt, status="failed", started=time.strftime("%Y-%m-%dT%H:%M:%S"), wall_s=1.0,
                     error=f"RuntimeError: synthetic failure of stage {LETTERS[nxt]} ({nxt}) (fake_study)")
    return root


if __name__ == "__main__":  # python tests/fakestudy.py [OUT]: write one to look at
    import sys

    t0 = time.time()
    out = fake_study(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/fake-study"), cache=False, quiet=False)
    print(out, f"{time.time() - t0:.1f} s")
