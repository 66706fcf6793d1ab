"""Sweeps: ``python -m lab.sweep -cn DESIGN -m [overrides]``, a Hydra multirun of proxy runs.

Designs live in ``sweeps/`` (``smoke``, ``isoflop``, ``kaplan``, ``batch_lr``, ``mixture``); each
sweeps a few per-job axes (``design.budget``, ``design.size``, ...) and every job turns its point
into a model shape and a budget in Python (:mod:`lab.designs`), then calls :func:`lab.train.train`
with ``run_dir`` = its own Hydra output folder. Launchers (``conf/hydra/launcher``): ``local``
(submitit, default; at most one training job per core, or per GPU, via file-lock slots) and
``slurm`` (``hydra/launcher=slurm``).

* ``--plan``: print the expanded design (N, D, C, batch, LR, mixture per run), the total compute
  and an estimated wall time from a quick speed probe (compiling included), the packs and which
  processes compile, and launch nothing. A real launch prints the same table first.
* Runs of one shape and one micro-batch train together in one process (:mod:`lab.pack`, planned in
  ``<sweep dir>/packs.json``), bit for bit as they would alone; ``--no-pack`` (or ``LAB_PACK=0``)
  trains one run per process. All runs share one compile cache (``<sweep dir>/.compile_cache``, or
  ``$LAB_COMPILE_CACHE``): a shape is compiled cold once (:mod:`lab.compile`).
* Relaunching a sweep into the same ``hydra.sweep.dir`` (the default folder has no timestamp)
  skips finished runs and resumes interrupted ones from their checkpoints.
* A failed or diverged run is recorded (``result.json``) and never stops the rest of the grid.
* While it runs, a progress line (done / running / failed, ETA); at the end the runs and curves
  tables are written to ``<sweep dir>/runs.parquet`` and ``curves.parquet`` with a summary.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from lab.config import DesignConfig, RunConfig, SweepConfig, register_configs, to_run_config
from lab.schedule import check_warmup
from lab.pack.launch import clear_packs, memory_budget, pack_configs, pack_followers, plan_packs, role, write_packs
from lab.designs import (
    RunSpec,
    ShapeRule,
    batch_lr_point,
    design_mixtures,
    isoflop_point,
    isoflop_wsd_point,
    served_budgets,
    kaplan_point,
    mixture_point,
    plan_table,
)

ROOT = Path(__file__).resolve().parent.parent
SWEEPS, CONF = ROOT / "sweeps", ROOT / "conf"
PROGRESS_EVERY_S = 15.0
_ENDED: dict[str, Any] = {}  # the driver's callback leaves the finished sweep's counts here for main()
_PLANNED: dict[str, Any] = {}  # main() leaves the planned jobs here for the driver's callback (packs.json)


# --------------------------------------------------------------------------------------------
# Design point -> run config
# --------------------------------------------------------------------------------------------


def _rule(cfg: SweepConfig) -> ShapeRule:
    vocab = 256 if cfg.data.tokenizer == "byte" else cfg.data.bpe_vocab_size
    d = cfg.design
    return ShapeRule(vocab_size=vocab, seq_len=cfg.data.seq_len, aspect=d.aspect, head_dim=d.head_dim,
                     kv_ratio=cfg.model.kv_ratio)


def _domains(cfg: RunConfig) -> list[str]:
    """The corpus's domains, read once per corpus (a plain dict cache: jobs are pickled by value
    from ``__main__``, which an ``lru_cache`` wrapper does not survive)."""
    from lab.data.build import ensure_corpus
    from lab.io import read_json

    key = (str(cfg.data.corpus), str(cfg.data.root))
    if key not in _DOMAINS:
        _DOMAINS[key] = sorted(read_json(Path(ensure_corpus(cfg.data.corpus, root=cfg.data.root)) / "manifest.json")["domains"])
    return list(_DOMAINS[key])


_DOMAINS: dict[tuple[str, str], list[str]] = {}


class DuplicatePoint(Exception):
    """A design point whose shape equals another point's: the job is skipped, not run twice."""


def design_spec(cfg: SweepConfig) -> RunSpec | None:
    """The :class:`RunSpec` of this job's design point (None for ``design.kind=none``); with
    ``design.hparams``, at the batch and LR the fitted law gives for the point."""
    d: DesignConfig = cfg.design.validate()
    spec = _design_point(cfg, cfg.train.batch_tokens, cfg.train.lr)
    if spec is None or d.hparams is None:
        return spec
    from lab.fit.hparams import batch_for, load_hparam_law, predict_hparams

    form, params = load_hparam_law(d.hparams)
    if form == "C":
        b_opt, lr = predict_hparams(params, "C", C=_law_budget(cfg, spec))
    else:
        b_opt, lr = predict_hparams(params, "ND", N=spec.params, D=_law_tokens(spec))
    spec = _design_point(cfg, batch_for(b_opt, cfg.data.seq_len), float(lr))
    spec.tags.update({"hparams_law": str(d.hparams), "B_opt_law": float(b_opt), "lr_opt_law": float(lr)})
    return spec


def _law_budget(cfg: SweepConfig, spec: RunSpec) -> float:
    """The C at which a form-C batch/LR law sets this point's batch and LR: its budget; for a WSD run
    serving several IsoFLOP budgets, their geometric mean (one LR has to serve them all)."""
    d = cfg.design
    if d.kind == "isoflop":
        return float(d.budget)
    if d.kind == "isoflop_wsd":
        return _geomean(served_budgets(spec.params, d.budgets, d.spread, _rule(cfg), d.tokens_per_param))
    return spec.flops


def _law_tokens(spec: RunSpec) -> float:
    """The D at which a form-ND batch/LR law sets this point's batch and LR: its D; for a WSD run with
    cooldown branches, the geometric mean of the D it finishes at (one LR has to serve them all)."""
    return _geomean([spec.tokens, *spec.cooldowns])


def _geomean(xs: list[float]) -> float:
    return float(math.exp(sum(math.log(x) for x in xs) / len(xs)))


def _design_point(cfg: SweepConfig, batch_tokens: int, lr: float) -> RunSpec | None:
    """The design point at this batch (tokens) and peak LR."""
    d, rule = cfg.design, _rule(cfg)
    t = replace(cfg.train, batch_tokens=batch_tokens, lr=lr)
    if d.kind == "none":
        return None
    if d.kind == "isoflop":
        points = [isoflop_point(d.budget, k, d.n_sizes, d.spread, t.batch_tokens, t.lr, rule, d.tokens_per_param)
                  for k in range(d.size + 1)]
        if any(_same_shape(p, points[-1]) for p in points[:-1]):
            raise DuplicatePoint(f"design.size={d.size} rounds to the same shape as a smaller index at this budget")
        return points[-1]
    if d.kind == "isoflop_wsd":
        sizes, budgets = [float(x) for x in d.sizes], [float(c) for c in d.budgets]
        points = [isoflop_wsd_point(sizes, k, budgets, d.spread, t.batch_tokens, t.lr, rule, d.tokens_per_param)
                  for k in range(d.size + 1)]
        if points[-1] is None:
            raise DuplicatePoint(f"design.size={d.size} lies in no budget's IsoFLOP window")
        if any(_same_shape(p, points[-1]) for p in points[:-1]):
            raise DuplicatePoint(f"design.size={d.size} rounds to the same shape as a smaller index")
        return points[-1]
    if d.kind == "kaplan":
        return kaplan_point(float(d.sizes[d.size]), d.tokens, t.batch_tokens, t.lr, rule, d.size)
    if d.kind == "batch_lr":
        return batch_lr_point(d.budget, t.batch_tokens, t.lr, rule, d.tokens_per_param, d.branch_fracs or ())
    mix = design_mixtures(_domains(cfg), d.n_mixtures, d.mixtures, d.alpha, d.seed)[d.mixture]
    return mixture_point(mix, float(d.sizes[d.size]), d.tokens_per_param, t.batch_tokens, t.lr, rule, d.size, d.mixture)


def _same_shape(a: RunSpec | None, b: RunSpec | None) -> bool:
    shape = lambda s: tuple(v for k, v in s.overrides.items() if k.startswith("model."))  # noqa: E731
    return a is not None and b is not None and shape(a) == shape(b)


def job_config(cfg: SweepConfig) -> tuple[SweepConfig, RunSpec]:
    """This job's run config (design applied) and its spec; validated, nothing run."""
    spec = design_spec(cfg)
    if spec is not None:
        o = spec.overrides
        model = replace(cfg.model, depth=None, **{k.split(".", 1)[1]: v for k, v in o.items() if k.startswith("model.")})
        train = replace(cfg.train, batch_tokens=spec.batch_tokens, lr=spec.lr,
                        tokens=o.get("train.tokens"), flops=o.get("train.flops"),
                        cooldowns=list(spec.cooldowns) or cfg.train.cooldowns)
        data = replace(cfg.data, mixture=spec.mixture) if spec.mixture != "natural" else cfg.data
        cfg = replace(cfg, model=model, train=train, data=data, tags={**cfg.tags, **spec.tags})
    else:
        spec = _plain_spec(cfg)
    cfg.validate()
    if cfg.data.mixture not in ("natural", "uniform"):  # a typo'd domain fails here, not in every job
        from lab.data.mixture import resolve_mixture

        resolve_mixture(cfg.data.mixture, list(_domains(cfg)))
    check_warmup(cfg.train.warmup, max(1, round(spec.tokens / spec.batch_tokens)), spec.batch_tokens)
    return cfg, spec


def _plain_spec(cfg: SweepConfig) -> RunSpec:
    """A RunSpec for a job without a design (its config taken as is)."""
    from lab.counting import counts, flops_per_token, shape_from_config, steps_for_tokens, tokens_for_flops

    t = cfg.train
    shape = shape_from_config(cfg.model, _rule(cfg).vocab_size, cfg.data.seq_len)
    fpt = flops_per_token(shape)
    target = t.tokens if t.tokens is not None else tokens_for_flops(t.flops, shape)
    tokens = steps_for_tokens(target, t.batch_tokens, "train.tokens" if t.tokens is not None else "train.flops") * t.batch_tokens
    return RunSpec(name="run", overrides={}, params=counts(shape)["params"], tokens=float(tokens),
                   flops=tokens * fpt, batch_tokens=t.batch_tokens, lr=t.lr, mixture=cfg.data.mixture)


# --------------------------------------------------------------------------------------------
# Grid expansion (the same product Hydra's basic sweeper runs) and the plan
# --------------------------------------------------------------------------------------------


def expand_grid(sweeper_params: dict[str, str] | None, task_overrides: list[str]) -> list[list[str]]:
    """Every job's overrides: the cartesian product of the sweep axes, plain overrides on each."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    axes: dict[str, list[str]] = {}
    plain: list[str] = []
    params = [f"{k}={v}" for k, v in (sweeper_params or {}).items()]
    for ov in parser.parse_overrides(params + list(task_overrides)):
        key = ov.get_key_element()
        if ov.is_sweep_override():
            axes[key] = [f"{key}={v}" for v in ov.sweep_string_iterator()]
        else:
            axes.pop(key, None)  # a plain command-line value replaces a swept axis
            plain.append(ov.input_line)
    if not axes:
        return [plain]
    grid = [list(combo) + plain for combo in itertools.product(*axes.values())]
    if not grid:
        raise ValueError("the sweep grid is empty: an axis has no values")
    return grid


def _compose(config_name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    register_configs()
    try:
        with initialize_config_dir(config_dir=str(SWEEPS), version_base="1.3"):
            return compose(config_name, overrides=[f"hydra.searchpath=[file://{CONF}]", *overrides],
                           return_hydra_config=True)
    except HydraException as e:  # unknown keys, missing designs, bad overrides: one clear line
        raise ValueError(str(e).strip().splitlines()[0]) from None


@dataclass
class Job:
    """One planned job of a sweep: its overrides, its run config (design applied), its spec, and the
    name of its run folder under the sweep folder (Hydra's ``override_dirname``)."""

    overrides: list[str]
    cfg: SweepConfig
    spec: RunSpec
    folder: str


def plan_jobs(config_name: str, overrides: list[str], exclude_keys: Sequence[str] = ()) -> list[Job]:
    """Compose and validate every job of a sweep; raises ValueError before anything runs.
    ``exclude_keys``: those the command line adds to hydra.job.config.override_dirname.exclude_keys."""
    base = _compose(config_name, [o for o in overrides if not _is_sweep(o)])
    grid = expand_grid(dict(base.hydra.sweeper.params or {}), overrides)
    jobs = []
    for job_overrides in grid:
        folder = _folder_name(base, job_overrides, exclude_keys)
        cfg = to_run_config(_compose(config_name, job_overrides), SweepConfig)
        try:
            run_cfg, spec = job_config(cfg)
        except DuplicatePoint:
            continue
        except ValueError as e:
            raise ValueError(f"job {' '.join(job_overrides)}: {e}") from None
        jobs.append(Job(job_overrides, run_cfg, spec, folder))
    return jobs


def _folder_name(base: Any, job_overrides: list[str], exclude_keys: Sequence[str] = ()) -> str:
    """The job's run folder name, as Hydra makes it (``override_dirname``: the overrides not excluded,
    sorted, joined). One longer than a file name may be (255 bytes) would fail inside the job, after
    the sweep launched: refused here."""
    od = base.hydra.job.config.override_dirname or {}
    excluded = set(od.get("exclude_keys") or []) | set(exclude_keys)
    key = lambda o: o.split("=", 1)[0].lstrip("+~")  # noqa: E731
    name = folder_name(job_overrides, excluded, od.get("item_sep") or ",", od.get("kv_sep") or "=")
    if len(name.encode()) > 255:
        longest = key(max((o for o in job_overrides if key(o) not in excluded), key=len))
        raise ValueError(f"the run folder name of job {' '.join(job_overrides)[:80]}... would be {len(name.encode())} "
                         f"bytes, over the 255 a file name may have: keep long shared settings out of it with "
                         f"hydra.job.config.override_dirname.exclude_keys=[...,{longest}] (each run's config.yaml "
                         "still records them)")
    return name


def folder_name(job_overrides: Sequence[str], excluded: set[str], item_sep: str = ",", kv_sep: str = "=") -> str:
    """Hydra's ``override_dirname`` of a job: its overrides but the excluded keys, sorted, joined."""
    key = lambda o: o.split("=", 1)[0].lstrip("+~")  # noqa: E731
    return item_sep.join(sorted(o for o in job_overrides if key(o) not in excluded)).replace("=", kv_sep)


def exclude_keys_of(argv: Sequence[str]) -> list[str]:
    """The keys a ``hydra.job.config.override_dirname.exclude_keys=[a,b]`` argument names (none: [])."""
    for a in argv:
        k, _, v = a.partition("=")
        if k.lstrip("+~") == "hydra.job.config.override_dirname.exclude_keys":
            return [x.strip() for x in v.strip("[]").split(",") if x.strip()]
    return []


def _is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([override])[0].is_sweep_override()


def speed_probe(specs: list[RunSpec], cfg: SweepConfig, steps: int = 3) -> float:
    """FLOP/s of one 1-thread worker: the mean over the smallest and largest model of the plan."""
    import torch

    from lab.config import TrainConfig
    from lab.counting import flops_per_token, resolve_shape
    from lab.model import Transformer
    from lab.hardware import keep_freed_memory
    from lab.step import make_optimizer, train_step

    torch.set_num_threads(1)
    keep_freed_memory()
    cpu, rates = torch.device("cpu"), []
    by_size = sorted(specs, key=lambda s: s.params)
    for s in {by_size[0].name: by_size[0], by_size[-1].name: by_size[-1]}.values():
        o = s.overrides
        if "model.num_layers" not in o:
            continue  # a plain job: no explicit shape to probe
        shape = resolve_shape(vocab_size=_rule(cfg).vocab_size, seq_len=cfg.data.seq_len,
                              num_layers=o["model.num_layers"], d_model=o["model.d_model"], num_heads=o["model.num_heads"],
                              num_kv_heads=o["model.num_kv_heads"], d_ff=o["model.d_ff"])
        model = Transformer(shape)
        opt = make_optimizer(model, TrainConfig(lr=1e-4))
        seqs = max(1, min(16, s.batch_tokens // shape.seq_len))
        x = torch.randint(0, shape.vocab_size, (seqs, shape.seq_len + 1))
        for i in range(steps + 1):  # the first step warms up and is not timed
            if i == 1:
                t0 = time.perf_counter()
            train_step(model, model, opt, iter([(x[:, :-1], x[:, 1:])]), 1, cpu, None, 1.0)
        rates.append(steps * seqs * shape.seq_len * flops_per_token(shape) / (time.perf_counter() - t0))
    return sum(rates) / len(rates) if rates else 0.0


def print_plan(config_name: str, overrides: list[str], probe: bool = True, exclude_keys: Sequence[str] = (),
               pack: bool = True) -> list[Job]:
    jobs = plan_jobs(config_name, overrides, exclude_keys)
    specs = [j.spec for j in jobs]
    workers = default_workers()
    rate = speed_probe(specs, jobs[0].cfg) * workers if probe else None
    print(f"[sweep] {config_name}: {len(jobs)} jobs, {workers} local workers")
    shown = [j.spec if j.spec.mixture != "natural" else replace(j.spec, mixture=j.cfg.data.mixture) for j in jobs]
    packs = pack_plan(jobs, workers, memory_budget(True, workers, None)) if pack else [[j.folder] for j in jobs]
    compiles, compile_s = compile_plan(jobs, packs)
    print(plan_table(shown, rate, compile_s / max(1, workers)))  # a data.mixture override is what the runs train on
    if pack:
        sizes = sorted((len(p) for p in packs), reverse=True)
        print(f"[sweep] packing: {len(jobs)} runs in {len(packs)} processes (members per pack: "
              f"{', '.join(map(str, sizes))}); --no-pack trains one run per process")
    print(f"[sweep] compile: {compiles} of {len(packs)} processes compile their step (~{compile_s:.0f} s in all, one "
          f"cache shared by the sweep)" if compiles else
          f"[sweep] compile: none ({_compile_reason(jobs, packs)})")
    return jobs


def compile_plan(jobs: Sequence[Job], packs: list[list[str]], device_type: str | None = None) -> tuple[int, float]:
    """(how many of the sweep's processes compile their step, the compile seconds in all) under each
    run's ``train.compile`` (:func:`lab.compile.decide`): the first process of a step compiles cold,
    the later ones load it warm from the sweep's shared cache."""
    from lab.compile import decide

    seen: set[str] = set()
    count, seconds = 0, 0.0
    for members, key in _pack_steps(jobs, packs, device_type):
        t = members[0].cfg.train
        dec = decide(t.compile, _device(device_type), _pack_flops(members), max(1, t.threads), key in seen)
        if dec.on:
            count, seconds = count + 1, seconds + dec.cost_s
            seen.add(key)
    return count, seconds


def _compile_reason(jobs: Sequence[Job], packs: list[list[str]]) -> str:
    """Why the first process does not compile (the plan's line when none does)."""
    from lab.compile import decide

    for members, _ in _pack_steps(jobs, packs, None):
        t = members[0].cfg.train
        return decide(t.compile, _device(None), _pack_flops(members), max(1, t.threads), False).reason
    return "no runs"


def _pack_steps(jobs: Sequence[Job], packs: list[list[str]], device_type: str | None
                ) -> Iterator[tuple[list[Job], str]]:
    """Each process's runs and its step's compile-cache key (:func:`lab.compile.shape_key`)."""
    from lab.compile import shape_key
    from lab.counting import shape_from_config

    by_name = {j.folder: j for j in jobs}
    for p in packs:
        members = [by_name[n] for n in p]
        cfg = members[0].cfg
        shape = shape_from_config(cfg.model, _rule(cfg).vocab_size, cfg.data.seq_len)
        yield members, shape_key(shape, _device(device_type), len(members))


def _pack_flops(members: Sequence[Job]) -> float:
    """Training FLOPs of a pack's members, their cooldown branches' own steps included."""
    return sum(j.spec.flops + sum(j.cfg.train.decay * d * j.spec.flops / j.spec.tokens for d in j.spec.cooldowns)
               for j in members)


def _device(device_type: str | None) -> str:
    return device_type or ("cuda" if _has_cuda() else "cpu")


def pack_plan(jobs: Sequence[Job], workers: int, budget: float, skip: Sequence[str] = ()) -> list[list[str]]:
    """The sweep's packs (lists of run folder names; :func:`lab.pack.launch.plan_packs`), leaving out
    the runs in ``skip`` (completed)."""
    from lab.counting import shape_from_config

    planned = [(j.folder, j.cfg, shape_from_config(j.cfg.model, _rule(j.cfg).vocab_size, j.cfg.data.seq_len),
                j.spec.flops) for j in jobs if j.folder not in set(skip)]
    return plan_packs(planned, workers, budget)


# --------------------------------------------------------------------------------------------
# Local worker slots: at most one training job per core (per GPU when GPUs exist)
# --------------------------------------------------------------------------------------------


def default_workers() -> int:
    env = os.environ.get("LAB_WORKERS")
    if env:
        return max(1, int(env))
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count()
    except ImportError:  # pragma: no cover
        pass
    return os.cpu_count() or 1


@contextlib.contextmanager
def worker_slot(n: int, lock_dir: Path) -> Iterator[int]:
    """Hold one of ``n`` machine-wide slots (file locks) for the block; yields the slot index.

    submitit's local executor starts every job at once and has no cap; jobs wait here instead,
    so the machine runs ``n`` trainings at a time without Hydra's batch-by-batch waits.
    """
    from lab.io import try_locked

    while True:
        for i in range(n):
            with try_locked(lock_dir / f"slot{i}.lock") as held:
                if held:
                    yield i
                    return
        time.sleep(0.2)


# --------------------------------------------------------------------------------------------
# The Hydra job and the driver's callback
# --------------------------------------------------------------------------------------------


def run_job(cfg: Any) -> str:
    """One sweep job: apply the design point, train into the job's output folder, never raise."""
    from hydra.core.hydra_config import HydraConfig

    from lab.train import train

    from lab.compile import CACHE_ENV, use_cache

    hc = HydraConfig.get()
    use_cache(os.environ.get(CACHE_ENV) or Path(hc.sweep.dir) / ".compile_cache")  # one cache for the sweep
    scfg = to_run_config(cfg, SweepConfig)
    scfg.run_dir = hc.runtime.output_dir
    local = "LocalLauncher" in str(hc.launcher.get("_target_", ""))
    who, pack = role(Path(hc.sweep.dir), Path(scfg.run_dir).name)
    if who == "follower":  # the pack's first job trains this run into this folder
        print(f"[sweep] {Path(scfg.run_dir).name}: trained in the pack of {pack['members'][0]['name']}", flush=True)
        return "packed"
    _write_job_info(Path(scfg.run_dir), local)
    try:
        if who == "leader":
            return _train_pack_job(Path(hc.sweep.dir), pack, local)
        try:
            run_cfg, _ = job_config(scfg)
        except DuplicatePoint as e:  # recorded, so the table and the progress count it as done
            from lab.io import atomic_write_json

            atomic_write_json(Path(scfg.run_dir) / "result.json", {"status": "skipped", "error": str(e)})
            print(f"[sweep] skipping {scfg.run_dir}: {e}", flush=True)
            return "skipped"
        slot = worker_slot(default_workers(), Path(hc.sweep.dir) / ".slots") if local else contextlib.nullcontext(0)
        with slot as i:
            if local and default_workers() and _has_cuda():
                os.environ.setdefault("CUDA_VISIBLE_DEVICES", str(i))
            return train(run_cfg)["status"]
    except Exception as e:  # recorded in result.json by train (or here, for a bad design point)
        from lab.io import atomic_write_json

        res = Path(scfg.run_dir) / "result.json"
        if not res.exists():
            atomic_write_json(res, {"status": "failed", "error": f"{type(e).__name__}: {e}"})
        print(f"[sweep] job {scfg.run_dir} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return "failed"


def _train_pack_job(sweep_dir: Path, pack: dict[str, Any], local: bool) -> str:
    """The leader's job: train every member of its pack (each into its own folder); its own status."""
    from lab.pack.train import train_pack

    cfgs = pack_configs(sweep_dir, pack)
    for c in cfgs[1:]:
        _write_job_info(Path(c.run_dir), local, leader=cfgs[0].run_dir)
    slot = worker_slot(default_workers(), sweep_dir / ".slots") if local else contextlib.nullcontext(0)
    with slot as i:
        if local and default_workers() and _has_cuda():
            os.environ.setdefault("CUDA_VISIBLE_DEVICES", str(i))
        return train_pack(cfgs, budget_bytes=pack["budget_bytes"])[0]["status"]


def _write_job_info(run_dir: Path, local: bool, leader: str | None = None) -> None:
    """Where this attempt ran (host, pid, Slurm job id): provenance, and the handle to cancel it."""
    from lab.io import atomic_write_json

    env = os.environ
    slurm = None
    if env.get("SLURM_ARRAY_JOB_ID"):
        slurm = f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '0')}"
    elif env.get("SLURM_JOB_ID"):
        slurm = env["SLURM_JOB_ID"]
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "job.json", {
        "launcher": "local" if local else "slurm", "host": os.uname().nodename, "pid": os.getpid(),
        "pack_leader": leader,
        "slurm_job_id": slurm, "slurm_restart_count": int(env.get("SLURM_RESTART_COUNT", 0)),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def sweep_status(sweep_dir: Path) -> dict[str, int]:
    """Counts of runs by status from the run folders (no table build)."""
    import json

    counts = {"completed": 0, "failed": 0, "diverged": 0, "running": 0}
    for res in sweep_dir.glob("*/result.json"):
        try:
            s = json.loads(res.read_text()).get("status", "failed")
        except (OSError, ValueError):
            continue
        counts[s] = counts.get(s, 0) + 1
    for ckpt in sweep_dir.glob("*/metrics.jsonl"):
        if not (ckpt.parent / "result.json").exists():
            counts["running"] += 1
    return counts


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object  # type: ignore[misc,assignment]

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # noqa: E402


class PackingSweeper(BasicSweeper):
    """Hydra's basic sweeper (the same grid, the same jobs) that leaves out the jobs whose runs a pack's
    first job trains (``packs.json``, written by :class:`SweepCallback` before the sweep starts): on a
    2-core machine 35 such jobs spent ~25 s of the cores starting Python and Hydra only to return."""

    def get_job_batch(self):
        batch = super().get_job_batch()
        hc = self.config.hydra
        od = hc.job.config.override_dirname
        followers = pack_followers(Path(hc.sweep.dir))
        if not followers:
            return batch
        excluded = set(od.exclude_keys or [])
        return [job for job in batch if folder_name(job, excluded, od.item_sep, od.kv_sep) not in followers]


SWEEPER_MODULE = "hydra_plugins.lab_packing"  # conf: hydra/sweeper=packing (lab.config.register_configs)


def register_sweeper() -> None:
    """Register :class:`PackingSweeper` with Hydra as ``hydra_plugins.lab_packing.PackingSweeper``.

    Hydra instantiates sweepers only from classes registered under ``hydra_plugins``; the usual way is
    a top-level ``hydra_plugins/`` package, which this repository's layout does not have, so the driver
    (the only process that instantiates a sweeper) registers the class through Hydra's own
    ``Plugins.register`` before Hydra starts.
    """
    import types

    from hydra.core.plugins import Plugins

    PackingSweeper.__module__ = SWEEPER_MODULE
    mod = types.ModuleType(SWEEPER_MODULE)
    mod.PackingSweeper = PackingSweeper  # type: ignore[attr-defined]
    sys.modules.setdefault(SWEEPER_MODULE, mod)
    Plugins.instance().register(PackingSweeper)


class SweepCallback(Callback):  # type: ignore[misc]
    """Driver side: a progress line while the sweep runs, the tables and a summary at the end."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict:  # the launcher pickles Hydra's context, callbacks included
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        hc = config.hydra  # HydraConfig.get() is not set yet in the driver's callbacks
        sweep_dir = Path(hc.sweep.dir)
        _write_pack_plan(sweep_dir, hc.launcher)
        total = len(expand_grid(dict(hc.sweeper.params or {}), list(hc.overrides.task)))
        self._t0 = time.time()
        self._thread = threading.Thread(target=self._progress, args=(sweep_dir, total), daemon=True)
        self._thread.start()

    def _progress(self, sweep_dir: Path, total: int | None) -> None:
        start = sweep_status(sweep_dir)
        start_done = sum(n for s, n in start.items() if s != "running")
        while not self._stop.wait(PROGRESS_EVERY_S):
            c = sweep_status(sweep_dir)
            done = sum(n for s, n in c.items() if s != "running")
            eta = ""
            if total and done > start_done:
                rate = (time.time() - self._t0) / (done - start_done)
                eta = f", ETA {rate * (total - done) / 60:.1f} min"
            print(
                f"[sweep] {done}/{total or '?'} done ({c['completed']} completed, {c['failed']} failed, "
                f"{c['diverged']} diverged), {c['running']} running{eta}",
                flush=True,
            )

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from lab.results import collect, save_table, summary

        self._stop.set()
        sweep_dir = Path(config.hydra.sweep.dir)
        tables = collect([sweep_dir])
        _ENDED.update(dir=sweep_dir, counts=sweep_status(sweep_dir))
        print(f"\n[sweep] finished in {time.time() - self._t0:.0f}s: {sweep_dir}")
        print(summary(tables.runs))
        if len(tables.runs):
            print(f"[sweep] tables: {save_table(tables.runs, sweep_dir / 'runs.parquet')}, "
                  f"{save_table(tables.curves, sweep_dir / 'curves.parquet') if len(tables.curves) else '(no curves)'}")


def _write_pack_plan(sweep_dir: Path, launcher: Any) -> None:
    """``packs.json`` for this launch: the planned runs not yet completed, packed (or no packs, with
    ``--no-pack`` or when main() planned nothing)."""
    jobs = _PLANNED.get("jobs")
    if not jobs or not _PLANNED.get("pack"):
        clear_packs(sweep_dir)
        return
    from lab.runfolder import completed_record

    local = "LocalLauncher" in str(launcher.get("_target_", ""))
    budget = memory_budget(local, default_workers(), launcher.get("mem_gb"))
    done = [j.folder for j in jobs if completed_record(sweep_dir / j.folder) is not None]
    packs = pack_plan(jobs, default_workers(), budget, skip=done)
    write_packs(sweep_dir, packs, {j.folder: j.cfg for j in jobs}, budget)
    if any(len(p) > 1 for p in packs):
        print(f"[sweep] {sum(len(p) for p in packs)} runs to train in {len(packs)} processes "
              f"(packs of {', '.join(str(len(p)) for p in packs)})", flush=True)


def check_slurm() -> None:
    """Raise ValueError unless a Slurm controller answers (before any job is submitted)."""
    import shutil
    import subprocess

    if not shutil.which("sbatch"):
        raise ValueError("hydra/launcher=slurm: `sbatch` is not on PATH; use hydra/launcher=local, or start a "
                         "cluster (e.g. `eval \"$(bash .ci/slurm.sh up)\"` for a one-node test cluster)")
    try:
        ok = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ValueError(f"hydra/launcher=slurm: no Slurm controller reachable ({e})") from None
    if ok.returncode != 0 or "DOWN" in ok.stdout:
        raise ValueError(f"hydra/launcher=slurm: no Slurm controller reachable: {ok.stdout.strip() or ok.stderr.strip()}")


def _split_argv(argv: list[str]) -> tuple[str, list[str]]:
    """(config name, task overrides) from a command line; Hydra flags are not overrides."""
    name, overrides, skip = None, [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
        elif a in ("-cn", "--config-name"):
            name, skip = (argv[i + 1] if i + 1 < len(argv) else None), True
        elif a.startswith("--config-name="):
            name = a.split("=", 1)[1]
        elif not a.startswith("-") and not a.startswith("hydra"):
            overrides.append(a)
    if not name:
        designs = sorted(p.stem for p in SWEEPS.glob("*.yaml") if not p.stem.startswith("_"))
        raise ValueError(f"give a sweep design with -cn NAME (one of: {', '.join(designs)})")
    return name, overrides


def main() -> None:
    argv = sys.argv[1:]
    plan_only, pack = "--plan" in argv, "--no-pack" not in argv and os.environ.get("LAB_PACK", "1") != "0"
    argv = [a for a in argv if a not in ("--plan", "--no-pack")]
    try:
        name, overrides = _split_argv(argv)
        if any(a.replace(" ", "") in ("hydra/launcher=slurm", "hydra/launcher=submitit_slurm") for a in argv):
            check_slurm()
        # Compose and validate every job, and print the plan, before anything is launched.
        jobs = print_plan(name, overrides, probe=plan_only or os.environ.get("LAB_SWEEP_PROBE", "1") != "0",
                          exclude_keys=exclude_keys_of(argv), pack=pack)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if plan_only:
        return
    if not ({"-m", "--multirun"} & set(argv)):  # without -m Hydra would run one job, without the sweep's values
        print(f"error: a sweep is a Hydra multirun: add -m (python -m lab.sweep -cn {name} -m ...); "
              f"--plan shows the plan without launching", file=sys.stderr)
        sys.exit(2)
    import hydra

    import lab.sweep as this  # the driver's callback runs in the imported module, not in __main__

    this._PLANNED.update(jobs=jobs, pack=pack)
    register_configs()
    this.register_sweeper()
    sys.argv = [sys.argv[0], *argv, f"hydra.searchpath=[file://{CONF}]"]
    hydra.main(version_base="1.3", config_path=str(SWEEPS), config_name=None)(run_job)()
    sys.exit(_exit_status(this._ENDED.get("counts"), this._ENDED.get("dir")))


def _exit_status(counts: dict[str, int] | None, sweep_dir: Path | None = None) -> int:
    """0 when at least one run completed (a diverged LR is a result); 1 when runs ran and none completed."""
    if not counts:
        return 0
    ran = sum(n for s, n in counts.items() if s not in ("running", "skipped"))
    if ran and not counts.get("completed"):
        said = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if n)
        print(f"[sweep] error: no run completed ({said}); see each run's error with python -m lab.results "
              f"{sweep_dir}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    main()
