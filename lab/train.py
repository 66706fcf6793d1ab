"""Train one proxy: ``train(cfg) -> result``; ``python -m lab.train`` runs one job from ``conf/``.

A run writes its own folder (``run_dir``):

* ``config.yaml``   the resolved configuration (plus the derived shape, steps and budget)
* ``metrics.jsonl`` one JSON object per logged step: step, tokens, flops, loss, lr, grad_norm,
                    tokens_per_s; evaluation rows add ``loss_val``, ``bpb_val`` and per-domain
                    ``loss_val_<domain>`` / ``bpb_val_<domain>``
* ``ckpt.pt``       the latest checkpoint, written atomically; deleted on success unless kept
* ``result.json``   the record the results tables read (status, N, D, C, losses, ...)

Budget: ``train.tokens`` (D) or ``train.flops`` (C, converted with :func:`lab.counting.flops_per_token`).
The run takes ``steps = round(D / B)`` optimizer steps of B = ``train.batch_tokens`` tokens, so the
achieved D and C are within half a batch of the request and are what the record reports.

A killed run started again with the same ``run_dir`` resumes from its checkpoint and, on CPU with
the same seed, ends with a bit-identical result: batches are a pure function of (seed, step)
(:class:`lab.data.mixture.MixtureSampler`) and the checkpoint holds model, optimizer and the logging
accumulators. A run whose ``result.json`` says ``completed`` is not run again. A run whose loss
becomes non-finite or exceeds ``diverge_factor`` x its initial loss stops with status ``diverged``;
an exception is recorded as ``failed`` (with the traceback) before it propagates.

``recipe=PATH`` trains the run a recipe describes (:mod:`lab.recipe.format`): its shape, data,
budget and optimisation replace the config's (hardware, logging and ``run_dir`` stay the command
line's). :func:`train` only trains; :func:`launch` (what ``python -m lab.train`` and the demo call)
trains and, when a recipe run completes, back-tests its predicted loss (``backtest.json``,
:mod:`lab.backtest`).

The loop reads like its table of contents: :func:`setup` (device, data, plan, model, parallel
wrapping), :func:`resume`, :func:`run_steps` (the step loop; the step itself is
:func:`lab.step.train_step`), :func:`finish` (the record, :mod:`lab.record`). Planning is
:mod:`lab.plan`, hardware :mod:`lab.hardware`, checkpoints :mod:`lab.checkpoint`.

Data parallel: under ``torchrun --nproc_per_node=K`` each process takes every K-th micro-batch
of the global batch (gloo on CPU, NCCL on GPUs) and DDP averages the gradients, so K processes
see exactly the batches one process would (batches are a pure function of (seed, step)) and
match it to float rounding. Rank 0 alone writes the record and checkpoints. ``train.parallel=fsdp``
shards parameters, gradients and optimizer state instead (FSDP2 ``fully_shard`` per block), for
models that do not fit one device; its checkpoints hold the gathered (unsharded) state, keyed by
parameter name, and resume under FSDP with any number of processes (a DDP or one-process
checkpoint resumes without FSDP). The model is still built whole on each device before sharding.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from lab.checkpoint import CheckpointError, full_state, load_state, read_jsonl, save_checkpoint
from lab.compile import CompileDecision, decide, mark_compiled, shape_key, warm
from lab.config import RunConfig, to_run_config
from lab.counting import micro_batch_sizes
from lab.data import load_corpus
from lab.data.mixture import MixtureSampler, validation_set
from lab.data.shards import TokenCorpus
from lab.hardware import Parallel, autocast_dtype, init_distributed, keep_freed_memory, pick_device, shard, world, wrap
from lab.io import atomic_write_json, try_locked
from lab.model import Transformer
from lab.plan import RunPlan, plan_run
from lab.record import failure_record, result_record
from lab.runfolder import (
    PROGRESS_EVERY_S,
    append_jsonl,
    check_same_corpus,
    completed_record,
    cooldown_row,
    cut_back_line_files,
    eval_due,
    finish_message,
    fresh_state,
    hold_after_checkpoint,
    metrics_row,
    print_progress,
    readable_checkpoint,
    say,
    start_line_files,
    warn,
    write_config,
)
from lab.schedule import lr_multiplier, warmup_steps
from lab.step import evaluate, make_optimizer, train_step, update_gns
from lab.trackers import Trackers


@dataclass
class Session:
    """Everything one run needs, built once by :func:`setup`."""

    cfg: RunConfig
    plan: RunPlan
    run_dir: Path
    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype | None
    corpus: TokenCorpus
    model: Transformer
    optimizer: torch.optim.Optimizer
    par: Parallel
    sampler: MixtureSampler
    val_sets: dict[str, torch.Tensor]
    compile: CompileDecision
    recipe_sha256: str | None = None  # the recipe file this run was trained from (for the back-test)

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "ckpt.pt"

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    @property
    def cooldowns_path(self) -> Path:
        return self.run_dir / "cooldowns.jsonl"


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def train(cfg: RunConfig | Any) -> dict[str, Any]:
    """Run (or resume, or skip if done) one training run; return its result record.

    When another process holds the run folder, return ``{"status": "busy", "error", "run_dir"}``
    without writing anything (under torchrun, raise instead, so every worker stops).
    """
    cfg = to_run_config(cfg)
    recipe_sha = None
    if cfg.recipe:
        from lab.recipe.format import apply_recipe, load_recipe, recipe_sha256

        cfg, recipe_sha = apply_recipe(cfg, load_recipe(cfg.recipe)), recipe_sha256(cfg.recipe)
    cfg.validate()
    run_dir = Path(cfg.run_dir)
    prev = completed_record(run_dir)
    if prev is not None:
        say(cfg, f"[train] {run_dir} already completed; skipping (delete result.json to rerun)")
        return prev
    run_dir.mkdir(parents=True, exist_ok=True)
    if world()[0] != 0:  # rank 0 holds the run folder for the process group
        return _train(cfg, run_dir, recipe_sha)
    with try_locked(run_dir / ".lock") as held:
        if not held:
            msg = f"{run_dir} is being trained by another process (it holds {run_dir / '.lock'}); skipping"
            print(f"[train] {msg}", file=sys.stderr, flush=True)
            if world()[1] > 1:  # the other ranks are waiting for this one in init_process_group
                raise RuntimeError(msg)
            return {"status": "busy", "error": msg, "run_dir": str(run_dir)}
        prev = completed_record(run_dir)  # the other process may have finished it while we waited
        return prev if prev is not None else _train(cfg, run_dir, recipe_sha)


def _train(cfg: RunConfig, run_dir: Path, recipe_sha: str | None) -> dict[str, Any]:
    started = time.time()
    try:
        s = setup(cfg, run_dir)
        s.recipe_sha256 = recipe_sha
        state = resume(s)
        return finish(s, state, run_steps(s, state))
    except Exception as e:  # record the failure before it propagates: failed runs are never lost
        if world()[0] == 0:
            try:
                atomic_write_json(run_dir / "result.json", failure_record(cfg, e, started))
            except OSError as w:  # a full disk: say so, keep the original error
                print(f"[train] could not write the failure record {run_dir / 'result.json'}: {w}", file=sys.stderr)
        raise


def launch(cfg: RunConfig | Any) -> dict[str, Any]:
    """Train one run and, when it was started from a recipe and completed, back-test the recipe's prediction.

    What ``python -m lab.train`` and the demo call. The back-test writes ``backtest.json`` and adds
    ``backtest`` (or ``backtest_error``) to the run's ``result.json``.
    """
    cfg = to_run_config(cfg)
    result = train(cfg)
    if cfg.recipe and world()[0] == 0:
        from lab.backtest import after_recipe_run, report
        from lab.recipe.format import load_recipe, recipe_sha256

        if result.get("status") == "completed" and result.get("recipe_sha256") != recipe_sha256(cfg.recipe):
            warn(f"[train] {cfg.run_dir} holds a completed run not trained from {cfg.recipe}; no back-test "
                  "(use another run_dir to train this recipe)")
            return result
        bt = after_recipe_run(load_recipe(cfg.recipe), result, cfg.run_dir)
        if bt is not None:
            say(cfg, report(bt))
    return result


# --------------------------------------------------------------------------------------------
# Setup and resume
# --------------------------------------------------------------------------------------------


def setup(cfg: RunConfig, run_dir: Path) -> Session:
    """Device, process group, data, plan, checks, the model and its parallel wrapping, optimizer, data order."""
    t = cfg.train
    rank, procs, _ = world()
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    keep_freed_memory()
    device = pick_device(t.device)
    if procs > 1:
        device = init_distributed(device)
    dtype = autocast_dtype(t.dtype, device)
    corpus = load_corpus(cfg.data, progress=t.progress and rank == 0)
    plan = plan_run(cfg, corpus)
    _check_layout(cfg, plan, procs)
    if rank == 0:
        write_config(cfg, plan, run_dir)
    torch.manual_seed(t.seed)
    model = Transformer(plan.shape, cfg.model).to(device)
    real = model.param_groups()
    if real != plan.counts["param_groups"]:  # formula and module must agree exactly
        raise AssertionError(f"parameter formula {plan.counts['param_groups']} != module {real}")
    dec = decide(t.compile, device.type, plan.flops_with_branches(t.batch_tokens), torch.get_num_threads(),
                 warm(shape_key(plan.shape, device.type)))
    fsdp = shard(model, procs, t.parallel)  # before the optimizer: it must see the sharded parameters
    optimizer = make_optimizer(model, t, fused=not fsdp)
    par = wrap(model, device, procs, fsdp, dec.on)
    sampler = MixtureSampler(corpus, plan.mixture, cfg.data.seq_len, t.seed)
    val_sets = {n: validation_set(corpus, n, cfg.data.seq_len, cfg.data.val_tokens) for n in plan.eval_domains}
    return Session(cfg, plan, run_dir, rank, procs, device, dtype, corpus, model, optimizer, par, sampler, val_sets,
                   dec)


def _check_layout(cfg: RunConfig, plan: RunPlan, procs: int) -> None:
    """What the process layout allows: an even split of micro-batches; GNS and branches in one process."""
    t = cfg.train
    if procs > 1:
        if plan.grad_accum % procs:
            raise ValueError(f"train.micro_batch: {procs} processes must split the batch's {plan.grad_accum} "
                             f"micro-batches evenly; allowed micro_batch values: "
                             f"{micro_batch_sizes(plan.batch_seqs, procs)}")
        if t.gns:
            raise ValueError("train.gns: the gradient noise scale is measured in one process; drop it under torchrun")
        if plan.branches:
            raise ValueError("train.cooldowns: cooldown branches run in one process only; drop them under torchrun")
    if t.gns and plan.grad_accum < 2:
        raise ValueError(f"train.gns: needs at least 2 micro-batches per step to compare gradient norms; the batch "
                         f"of {plan.batch_seqs} sequences is one micro-batch: set train.micro_batch to a divisor "
                         f"below {plan.batch_seqs}")


def resume(s: Session) -> dict[str, Any]:
    """The loop's state: from the checkpoint when there is one (metrics cut back to it), else fresh."""
    state = fresh_state()
    ckpt = readable_checkpoint(s.ckpt_path, strict=s.world > 1)
    if ckpt is not None:
        check_same_corpus(s.cfg, ckpt, s.corpus.fingerprint, s.ckpt_path)
        load_state(s.model, s.optimizer, ckpt, s.par.fsdp)
        state = ckpt["state"]
        state["resumes"] += 1
        if s.rank == 0:
            cut_back_line_files(s.run_dir, state["step"])
        say(s.cfg, f"[train] resuming {s.run_dir} from step {state['step']}/{s.plan.steps}")
    elif s.rank == 0:
        start_line_files(s.run_dir)
    _announce(s)
    return state


def _announce(s: Session) -> None:
    p, c, sh = s.plan, s.plan.counts, s.plan.shape
    say(
        s.cfg,
        f"[train] N={c['params']:,} (total {c['params_total']:,}) layers={sh.num_layers} d={sh.d_model} "
        f"heads={sh.num_heads}/{sh.num_kv_heads} ff={sh.d_ff} | D={p.tokens:.4g} C={p.flops:.4g} "
        f"| {p.steps} steps x B={s.cfg.train.batch_tokens} ({p.batch_seqs} seqs, accum {p.grad_accum}"
        f"{f' over {s.world} processes' if s.world > 1 else ''}) | {s.device.type}"
        f"{'/bf16' if s.dtype else '/fp32'} | corpus {s.corpus.meta.get('corpus')} ({s.corpus.tokenizer}) | compile "
        f"{'on' if s.compile.on else 'off'} ({s.compile.reason})",
    )


# --------------------------------------------------------------------------------------------
# The step loop
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How the loop ended: status, error, steps done, the last step's numbers and evaluation, wall seconds."""

    status: str
    error: str | None
    steps: int
    last: dict[str, Any]
    wall_s: float


def run_steps(s: Session, state: dict[str, Any]) -> Outcome:
    """Train from ``state["step"]`` to the plan's last step: log, evaluate, branch, checkpoint, stop on divergence."""
    t, plan = s.cfg.train, s.plan
    gns: dict[str, float] | None = {} if t.gns else None
    b_small = plan.micro_batch * s.cfg.data.seq_len
    status, error, done = "completed", None, state["step"]
    last: dict[str, Any] = {"loss": float("nan"), "lr": 0.0, "grad_norm": 0.0, "eval": {}}
    clock = {"seg_start": time.time(), "seg_tokens": 0, "last_print": time.time()}
    trackers = Trackers(s.cfg, s.run_dir, asdict(s.cfg)) if s.rank == 0 else _NoTrackers()
    metrics = open(s.metrics_path if s.rank == 0 else os.devnull, "a", encoding="utf-8")
    try:
        for step in range(state["step"], plan.steps):
            lr = t.lr * lr_multiplier(step, plan.steps, t.schedule, t.warmup, t.min_lr_ratio, t.decay, t.decay_shape)
            for g in s.optimizer.param_groups:
                g["lr"] = lr
            micro_batches = (s.sampler.batch(step, plan.micro_batch, m)[:2]
                             for m in range(s.rank, plan.grad_accum, s.world))
            loss, gnorm = train_step(s.par.fwd, s.model, s.optimizer, micro_batches, plan.grad_accum // s.world,
                                     s.device, s.dtype, t.grad_clip, s.par.no_sync, gns)
            if gns is not None:
                update_gns(state, gns, b_small, t.batch_tokens)
            clock["seg_tokens"] += t.batch_tokens
            if s.world > 1:  # every rank logs and judges divergence on the global mean loss
                dist.all_reduce(loss)
                loss = loss / s.world
            step_loss = float(loss)  # one sync per step; negligible for proxies
            if state["initial_loss"] is None:
                state["initial_loss"] = step_loss
            state["win_loss"] += step_loss
            state["win_n"] += 1
            last.update(loss=step_loss, lr=lr, grad_norm=float(gnorm))
            diverged = not math.isfinite(step_loss) or step_loss > t.diverge_factor * state["initial_loss"]
            done = step + 1
            if done % plan.log_every == 0 or done == plan.steps or diverged:
                _log_row(s, state, clock, last, done, diverged, metrics, trackers)
            if diverged:
                status = "diverged"
                error = (f"loss {step_loss:.4g} at step {done} (initial {state['initial_loss']:.4g}, "
                         f"factor {t.diverge_factor})")
                break
            if done in plan.branches:
                _branch(s, done)
            if plan.ckpt_every > 0 and done % plan.ckpt_every == 0 and done < plan.steps:
                metrics.flush()
                _checkpoint(s, state, clock, done)
    finally:
        metrics.close()
        trackers.close()
    steps_done = plan.steps if status == "completed" else done
    return Outcome(status, error, steps_done, last, state["elapsed"] + (time.time() - clock["seg_start"]))


def _log_row(s: Session, state: dict, clock: dict, last: dict, done: int, diverged: bool, metrics, trackers) -> None:
    """One metrics row: the window's mean loss, LR, grad norm, throughput; an evaluation when one is due."""
    t, plan = s.cfg.train, s.plan
    now = time.time()
    elapsed = state["elapsed"] + (now - clock["seg_start"])
    row = metrics_row(s.cfg, plan, state, last, done, elapsed,
                      clock["seg_tokens"] / max(1e-9, now - clock["seg_start"]))
    if eval_due(plan, done) and not diverged and (s.rank == 0 or s.par.fsdp):
        last["eval"] = evaluate(s.model, s.val_sets, s.corpus, plan.val_weights, plan.micro_batch, s.device, s.dtype)
        row.update(last["eval"])
    metrics.write(json.dumps(row) + "\n")
    metrics.flush()
    trackers.log(row)
    if t.progress and s.rank == 0 and ("loss_val" in row or done == plan.steps
                                       or now - clock["last_print"] >= PROGRESS_EVERY_S):
        print_progress(row, plan.steps, elapsed, plan.flops_per_token)
        clock["last_print"] = now


def _checkpoint(s: Session, state: dict, clock: dict, done: int) -> None:
    """Save model, optimizer and the loop's state at step ``done`` (rank 0 writes; a collective under FSDP)."""
    state["step"] = done
    state["elapsed"] += time.time() - clock["seg_start"]
    clock["seg_start"], clock["seg_tokens"] = time.time(), 0
    model_sd, optim_sd = full_state(s.model, s.optimizer, s.par.fsdp)
    if s.rank == 0:
        save_checkpoint(s.ckpt_path, {"model": model_sd, "optimizer": optim_sd, "state": state,
                                      "corpus": s.corpus.fingerprint})
        if hold_after_checkpoint(state):
            clock["seg_start"] = time.time()


def _branch(s: Session, start: int) -> None:
    """Run the cooldown branch that starts at ``start`` and append its row to ``cooldowns.jsonl``."""
    row = _cooldown_branch(s, start)
    append_jsonl(s.cooldowns_path, row)
    say(s.cfg, f"  cooldown branch to D={row['tokens']:.4g}: loss_val {row['loss_val']:.4f}")


def _cooldown_branch(s: Session, start: int) -> dict:
    """Fork at ``start``, decay the LR to reach the branch's end step as a WSD run of that length
    would (Hägele et al. 2024, arXiv:2405.18392), evaluate, then restore the main run's state.

    The branch sees the batches the main run sees at the same steps, so a branch ending at step
    s_i is the run a WSD schedule of s_i steps would have been. Its compute is recorded apart.
    """
    t, plan = s.cfg.train, s.plan
    end = plan.branches[start]
    saved = copy.deepcopy({"model": s.model.state_dict(), "optimizer": s.optimizer.state_dict()})
    w = warmup_steps(t.warmup, plan.steps)
    for step in range(start, end):
        lr = t.lr * lr_multiplier(step, end, "wsd", w, t.min_lr_ratio, t.decay, t.decay_shape)
        for g in s.optimizer.param_groups:
            g["lr"] = lr
        micro_batches = (s.sampler.batch(step, plan.micro_batch, m)[:2] for m in range(plan.grad_accum))
        train_step(s.par.fwd, s.model, s.optimizer, micro_batches, plan.grad_accum, s.device, s.dtype, t.grad_clip)
    ev = evaluate(s.model, s.val_sets, s.corpus, plan.val_weights, plan.micro_batch, s.device, s.dtype)
    s.model.load_state_dict(saved["model"])
    s.optimizer.load_state_dict(saved["optimizer"])
    return cooldown_row(plan, t.batch_tokens, start, end, ev)


# --------------------------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------------------------


def finish(s: Session, state: dict[str, Any], out: Outcome) -> dict[str, Any]:
    """Write the record (rank 0), drop the checkpoint of a completed run unless kept, say how it went."""
    cfg = s.cfg
    run = {"status": out.status, "error": out.error, "run_dir": str(s.run_dir), "steps": out.steps,
           "wall_s": out.wall_s, "corpus": s.corpus.meta.get("corpus"), "tokenizer": s.corpus.tokenizer,
           "vocab_size": s.corpus.vocab_size, "cooldowns": read_jsonl(s.cooldowns_path),
           "corpus_fingerprint": s.corpus.fingerprint, "recipe_sha256": s.recipe_sha256}
    hardware = {"device": s.device.type, "dtype": "bfloat16" if s.dtype else "float32",
                "threads": torch.get_num_threads(), "world_size": s.world,
                "parallel": cfg.train.parallel if s.world > 1 else "none", "compiled": s.compile.on}
    if s.compile.on:
        mark_compiled(shape_key(s.plan.shape, s.device.type))
    result = result_record(cfg, s.plan, run, state, out.last, hardware)
    if s.world > 1:
        dist.destroy_process_group()
        if s.rank != 0:
            return result
    atomic_write_json(s.run_dir / "result.json", result)
    if out.status == "completed" and s.ckpt_path.exists() and not cfg.train.keep_ckpt:
        s.ckpt_path.unlink()
    say(cfg, finish_message(result, out.wall_s, s.run_dir))
    return result


class _NoTrackers:
    """Ranks other than 0 log nothing."""

    def log(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _hydra_main() -> None:
    import hydra

    from lab.config import register_configs

    register_configs()
    conf = str(Path(__file__).resolve().parent.parent / "conf")

    @hydra.main(version_base="1.3", config_path=conf, config_name="config")
    def main(cfg) -> None:
        try:
            result = launch(cfg)
        except ValueError as e:  # bad config or data: one clear line, no traceback
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except CheckpointError as e:  # a full disk: the run is recorded failed and resumes when rerun
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        if result["status"] != "completed":
            print(f"[train] run ended with status {result['status']}: {result.get('error')}", file=sys.stderr)
            sys.exit(1)

    main()


if __name__ == "__main__":
    _hydra_main()
