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

``recipe=PATH`` trains the run a recipe describes (:mod:`lab.recipe`): its shape, data, budget
and optimisation replace the config's (hardware, logging and ``run_dir`` stay the command line's),
and when the run completes its predicted loss is back-tested (``backtest.json``, :mod:`lab.backtest`).

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

import contextlib
import copy
import io
import json
import math
import os
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.distributed as dist

import lab
from lab.config import RunConfig, TrainConfig, to_run_config
from lab.counting import Shape, counts, steps_for_tokens
from lab.data import load_corpus
from lab.data.mixture import MixtureSampler, resolve_mixture, validation_set
from lab.data.shards import TokenCorpus, bits_per_byte
from lab.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from lab.model import Transformer, shape_from_config
from lab.trackers import Trackers
from lab.schedule import lr_multiplier, warmup_steps

EVAL_BUDGET_FRACTION = 0.1  # automatic intermediate evals cost at most ~10% of training FLOPs
MAX_AUTO_EVALS = 20
AUTO_LOG_LINES = 100
AUTO_CKPTS = 10
PROGRESS_EVERY_S = 5.0  # a progress line at most this often (and at every evaluation)


# --------------------------------------------------------------------------------------------
# Planning: everything derived from the config before any compute is spent
# --------------------------------------------------------------------------------------------


def plan_run(cfg: RunConfig, corpus: TokenCorpus) -> dict[str, Any]:
    """Derive shape, counts, steps, batch split, mixture and eval cadence; validate against the data."""
    t, d = cfg.train, cfg.data
    shape = shape_from_config(cfg.model, corpus.vocab_size, d.seq_len)
    c = counts(shape)
    natural = corpus.train_tokens()
    mixture = resolve_mixture(d.mixture, corpus.names, natural)
    if isinstance(d.val_weights, str) and d.val_weights == "mixture":
        val_weights = dict(mixture)
    else:
        val_weights = resolve_mixture(d.val_weights, corpus.names, natural, field="data.val_weights")
    # Every domain is evaluated, trained on or not: mixing laws need the loss on all of them.
    eval_domains = list(corpus.names)
    batch_seqs = t.batch_tokens // d.seq_len
    micro = t.micro_batch or batch_seqs
    target_tokens = float(t.tokens) if t.tokens is not None else float(t.flops) / c["flops_per_token"]
    steps = steps_for_tokens(target_tokens, t.batch_tokens, "train.tokens" if t.tokens is not None else "train.flops")
    tokens = float(steps * t.batch_tokens)
    val_tokens_total = sum(min(d.val_tokens, len(corpus.domains[n].val)) for n in eval_domains)
    if t.eval_every > 0:
        eval_every = t.eval_every
    else:  # forward-only evals cost ~1/3 of a training token each
        n_evals = int(EVAL_BUDGET_FRACTION * 3 * tokens / max(1, val_tokens_total))
        n_evals = min(MAX_AUTO_EVALS, n_evals)
        eval_every = steps // n_evals if n_evals > 0 else steps
    log_every = t.log_every if t.log_every > 0 else max(1, steps // AUTO_LOG_LINES)
    ckpt_every = t.ckpt_every if t.ckpt_every != 0 else max(1, steps // AUTO_CKPTS)
    branches = {}
    w = warmup_steps(t.warmup, steps)
    for d_i in sorted(set(float(x) for x in t.cooldowns)):
        s_i = int(round(d_i / t.batch_tokens))
        k_i = max(1, int(round(t.decay * s_i)))
        if not (w < s_i - k_i and s_i < steps):
            raise ValueError(
                f"train.cooldowns: {d_i:.4g} tokens is not inside the stable phase of this run "
                f"(branches must end before D={tokens:.4g} and start after the {w}-step warmup)"
            )
        branches[s_i - k_i] = s_i
    return {
        "shape": shape,
        "counts": c,
        "branches": branches,  # branch start step -> branch end step (the D_i it measures)
        "mixture": mixture,
        "val_weights": val_weights,
        "eval_domains": eval_domains,
        "batch_seqs": batch_seqs,
        "micro_batch": micro,
        "grad_accum": batch_seqs // micro,
        "target_tokens": target_tokens,
        "steps": steps,
        "tokens": tokens,
        "flops": tokens * c["flops_per_token"],
        "eval_every": max(1, eval_every),
        "log_every": log_every,
        "ckpt_every": ckpt_every,
    }


# --------------------------------------------------------------------------------------------
# Hardware
# --------------------------------------------------------------------------------------------


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device: 'cuda' requested but no CUDA device is available; allowed: auto, cpu")
    return torch.device(name)


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPU by default; CPU stays fp32 unless asked."""
    if name == "bfloat16" or (name == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_optimizer(model: Transformer, t: TrainConfig, fused: bool = True) -> torch.optim.Optimizer:
    """AdamW; the fused kernel (CPU and CUDA in recent torch) when available."""
    kw = dict(lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps)
    if not fused:
        return torch.optim.AdamW(model.optimizer_groups(t.weight_decay), foreach=True, **kw)
    try:
        return torch.optim.AdamW(model.optimizer_groups(t.weight_decay), fused=True, **kw)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(model.optimizer_groups(t.weight_decay), foreach=True, **kw)


def train_step(
    fwd: torch.nn.Module,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    accum: int,
    device: torch.device,
    dtype: torch.dtype | None,
    grad_clip: float,
    no_sync: Any = None,
    gns: dict[str, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over ``accum`` micro-batches; returns (mean loss, pre-clip grad norm).

    ``no_sync``: DDP's context manager; gradients are all-reduced on the last micro-batch only.
    The benchmark times exactly this function, so its numbers are the trainer's numbers.
    """
    loss_sum = torch.zeros((), device=device)
    prev: list[torch.Tensor] | None = None
    small_sq = 0.0
    for i, (x, y) in enumerate(micro_batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sync = no_sync() if (no_sync is not None and i < accum - 1) else contextlib.nullcontext()
        with sync:
            with _autocast(device, dtype):
                loss = fwd(x, y)
            (loss / accum).backward()
        loss_sum += loss.detach()
        if gns is not None:  # this micro-batch's gradient = accumulated now - accumulated before
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            sq = sum(float(((g - q) ** 2).sum()) for g, q in zip(grads, prev)) if prev is not None \
                else sum(float((g * g).sum()) for g in grads)
            small_sq += sq * accum  # |g_i|^2 = accum^2 |diff|^2, averaged over the accum micro-batches
            prev = [g.detach().clone() for g in grads]
    if gns is not None:
        gns["small"] = small_sq
        gns["big"] = sum(float((p.grad * p.grad).sum()) for p in model.parameters() if p.grad is not None)
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    if hasattr(gnorm, "full_tensor"):  # FSDP: a sharded (DTensor) norm
        gnorm = gnorm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum / accum, gnorm


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    val_sets: dict[str, torch.Tensor],
    corpus: TokenCorpus,
    weights: dict[str, float],
    micro: int,
    device: torch.device,
    dtype: torch.dtype | None,
) -> dict[str, float]:
    """Per-domain and weighted validation loss (nats/token) and bits-per-byte."""
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    for name, rows in val_sets.items():
        total, count = 0.0, 0
        for i in range(0, len(rows), micro):
            chunk = rows[i : i + micro].to(device, non_blocking=True)
            with _autocast(device, dtype):
                logits = model(chunk[:, :-1])
            loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum"
            )
            total += float(loss)
            count += chunk[:, 1:].numel()
        out[f"loss_val_{name}"] = total / count
        out[f"bpb_val_{name}"] = bits_per_byte(total / count, corpus.domains[name].val_bytes_per_token)
    wsum = sum(w for n, w in weights.items() if n in val_sets)
    out["loss_val"] = sum(w * out[f"loss_val_{n}"] for n, w in weights.items() if n in val_sets) / wsum
    out["bpb_val"] = sum(w * out[f"bpb_val_{n}"] for n, w in weights.items() if n in val_sets) / wsum
    model.train(was_training)
    return out


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def _truncate_metrics(path: Path, last_step: int, key: str = "step") -> None:
    """Keep JSONL rows whose ``key`` is <= ``last_step`` (later ones will be written again)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)[key] <= last_step]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def train(cfg: RunConfig | Any) -> dict[str, Any]:
    """Run (or resume, or skip if done) one training run; return its result record."""
    cfg = to_run_config(cfg)
    recipe = None
    if cfg.recipe:
        from lab.recipe import apply_recipe, load_recipe
        recipe = load_recipe(cfg.recipe)
        cfg = apply_recipe(cfg, recipe)
    cfg.validate()
    run_dir = Path(cfg.run_dir)
    result_path = run_dir / "result.json"
    if result_path.exists():
        prev = read_json(result_path)
        if prev.get("status") == "completed":
            _say(cfg, f"[train] {run_dir} already completed; skipping (delete result.json to rerun)")
            return prev
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    try:
        return _train(cfg, run_dir, started, recipe)
    except Exception as e:  # record the failure before it propagates: failed runs are never lost
        if _world()[0] != 0:
            raise
        atomic_write_json(
            result_path,
            {
                "status": "failed",
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(),
                "config": asdict(cfg),
                "lab_version": lab.__version__,
                "wall_s": time.time() - started,
            },
        )
        raise


def _world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when run plainly."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _init_distributed(device: torch.device) -> torch.device:
    if not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", _world()[2])
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def _train(cfg: RunConfig, run_dir: Path, started: float, recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    t = cfg.train
    rank, world, _ = _world()
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    device = pick_device(t.device)
    if world > 1:
        device = _init_distributed(device)
    dtype = autocast_dtype(t.dtype, device)
    corpus = load_corpus(cfg.data, progress=t.progress and rank == 0)
    plan = plan_run(cfg, corpus)
    shape: Shape = plan["shape"]
    fpt = plan["counts"]["flops_per_token"]
    steps, B, accum, micro = plan["steps"], t.batch_tokens, plan["grad_accum"], plan["micro_batch"]
    if world > 1:
        if accum % world:
            seqs = plan["batch_seqs"]
            ok = [m for m in range(1, seqs + 1) if seqs % m == 0 and (seqs // m) % world == 0]
            raise ValueError(f"train.micro_batch: {world} processes must split the batch's {accum} micro-batches "
                             f"evenly; allowed micro_batch values: {ok}")
        if t.gns:
            raise ValueError("train.gns: the gradient noise scale is measured in one process; drop it under torchrun")
        if plan["branches"]:
            raise ValueError("train.cooldowns: cooldown branches run in one process only; drop them under torchrun")
    if rank == 0:
        _write_config(cfg, plan, run_dir)

    torch.manual_seed(t.seed)
    model = Transformer(shape, cfg.model).to(device)
    real = model.param_groups()
    if real != plan["counts"]["param_groups"]:  # formula and module must agree exactly
        raise AssertionError(f"parameter formula {plan['counts']['param_groups']} != module {real}")
    use_compile = t.compile == "on" or (t.compile == "auto" and device.type == "cuda")
    fsdp = world > 1 and t.parallel == "fsdp"
    no_sync = None
    if fsdp:  # shard every block and the rest (FSDP2); the optimizer must see the sharded parameters
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        no_sync = lambda: _fsdp_no_sync(model)  # noqa: E731
    optimizer = make_optimizer(model, t, fused=not fsdp)
    fwd = torch.compile(model) if use_compile else model
    if world > 1 and not fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        fwd, no_sync = (torch.compile(ddp) if use_compile else ddp), ddp.no_sync
    sampler = MixtureSampler(corpus, plan["mixture"], cfg.data.seq_len, t.seed)
    val_sets = {n: validation_set(corpus, n, cfg.data.seq_len, cfg.data.val_tokens) for n in plan["eval_domains"]}
    local_accum = accum // world

    ckpt_path, metrics_path = run_dir / "ckpt.pt", run_dir / "metrics.jsonl"
    cooldowns_path = run_dir / "cooldowns.jsonl"
    if t.gns and accum < 2:
        raise ValueError(f"train.gns: needs at least 2 micro-batches per step to compare gradient norms; the batch "
                         f"of {plan['batch_seqs']} sequences is one micro-batch: set train.micro_batch to a divisor "
                         f"below {plan['batch_seqs']}")
    gns: dict[str, float] | None = {} if t.gns else None
    b_small, b_big = micro * cfg.data.seq_len, B
    state = {"step": 0, "elapsed": 0.0, "initial_loss": None, "win_loss": 0.0, "win_n": 0, "resumes": 0,
             "gns_G2": None, "gns_S": None}
    ckpt = load_checkpoint(ckpt_path)
    if ckpt is not None:
        _load_state(model, optimizer, ckpt, fsdp)
        state = ckpt["state"]
        state["resumes"] += 1
        if rank == 0:
            _truncate_metrics(metrics_path, state["step"])
            _truncate_metrics(cooldowns_path, state["step"], key="branch_start")
        _say(cfg, f"[train] resuming {run_dir} from step {state['step']}/{steps}")
    elif metrics_path.exists() and rank == 0:
        metrics_path.unlink()  # a run that died before its first checkpoint starts over
        cooldowns_path.unlink(missing_ok=True)

    c = plan["counts"]
    _say(
        cfg,
        f"[train] N={c['params']:,} (total {c['params_total']:,}) layers={shape.num_layers} d={shape.d_model} "
        f"heads={shape.num_heads}/{shape.num_kv_heads} ff={shape.d_ff} | D={plan['tokens']:.4g} C={plan['flops']:.4g} "
        f"| {steps} steps x B={B} ({plan['batch_seqs']} seqs, accum {accum}"
        f"{f' over {world} processes' if world > 1 else ''}) | {device.type}"
        f"{'/bf16' if dtype else '/fp32'} | corpus {corpus.meta.get('corpus')} ({corpus.tokenizer})",
    )

    model.train()
    status, error = "completed", None
    last_eval: dict[str, float] = {}
    last_loss, last_lr, last_gnorm = float("nan"), 0.0, 0.0
    seg_start, seg_tokens = time.time(), 0
    last_print = seg_start
    trackers = Trackers(cfg, run_dir, asdict(cfg)) if rank == 0 else _NoTrackers()
    metrics = open(metrics_path if rank == 0 else os.devnull, "a", encoding="utf-8")
    try:
        for step in range(state["step"], steps):
            lr = t.lr * lr_multiplier(step, steps, t.schedule, t.warmup, t.min_lr_ratio, t.decay, t.decay_shape)
            for g in optimizer.param_groups:
                g["lr"] = lr
            micro_batches = (sampler.batch(step, micro, m)[:2] for m in range(rank, accum, world))
            loss, gnorm = train_step(fwd, model, optimizer, micro_batches, local_accum, device, dtype, t.grad_clip,
                                     no_sync, gns)
            if gns is not None:  # unbiased |G|^2 and tr(Sigma) estimates, smoothed (McCandlish et al. 2018, app. A)
                G2 = (b_big * gns["big"] - b_small * gns["small"]) / (b_big - b_small)
                S = (gns["small"] - gns["big"]) / (1 / b_small - 1 / b_big)
                a = 0.95
                state["gns_G2"] = G2 if state.get("gns_G2") is None else a * state["gns_G2"] + (1 - a) * G2
                state["gns_S"] = S if state.get("gns_S") is None else a * state["gns_S"] + (1 - a) * S
            seg_tokens += B
            if world > 1:  # every rank logs and judges divergence on the global mean loss
                dist.all_reduce(loss)
                loss = loss / world

            step_loss = float(loss)  # one sync per step; negligible for proxies
            if state["initial_loss"] is None:
                state["initial_loss"] = step_loss
            state["win_loss"] += step_loss
            state["win_n"] += 1
            last_loss, last_lr, last_gnorm = step_loss, lr, float(gnorm)
            diverged = not math.isfinite(step_loss) or step_loss > t.diverge_factor * state["initial_loss"]
            done = step + 1

            if done % plan["log_every"] == 0 or done == steps or diverged:
                now = time.time()
                elapsed = state["elapsed"] + (now - seg_start)
                row = {
                    "step": done,
                    "tokens": float(done * B),
                    "flops": float(done * B) * fpt,
                    "loss": state["win_loss"] / state["win_n"],
                    **({"gns_B_noise": state["gns_S"] / state["gns_G2"] if state["gns_G2"] else float("nan")}
                       if gns is not None else {}),
                    "lr": lr,
                    "grad_norm": float(gnorm),
                    "tokens_per_s": seg_tokens / max(1e-9, now - seg_start),
                    "elapsed_s": elapsed,
                }
                state["win_loss"], state["win_n"] = 0.0, 0
                if (done % plan["eval_every"] == 0 or done == steps) and not diverged and (rank == 0 or fsdp):
                    last_eval = evaluate(model, val_sets, corpus, plan["val_weights"], micro, device, dtype)
                    row.update(last_eval)
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                trackers.log(row)
                if t.progress and rank == 0 and ("loss_val" in row or done == steps or now - last_print >= PROGRESS_EVERY_S):
                    _progress(cfg, row, steps, elapsed, fpt)
                    last_print = now
            if diverged:
                status = "diverged"
                error = f"loss {step_loss:.4g} at step {done} (initial {state['initial_loss']:.4g}, factor {t.diverge_factor})"
                break
            if done in plan["branches"]:
                row = _cooldown_branch(cfg, plan, model, fwd, optimizer, sampler, val_sets, corpus, done, device, dtype)
                with open(cooldowns_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                _say(cfg, f"  cooldown branch to D={row['tokens']:.4g}: loss_val {row['loss_val']:.4f}")
            if plan["ckpt_every"] > 0 and done % plan["ckpt_every"] == 0 and done < steps:
                metrics.flush()
                state["step"] = done
                state["elapsed"] += time.time() - seg_start
                seg_start, seg_tokens = time.time(), 0
                model_sd, optim_sd = _full_state(model, optimizer, fsdp)  # collective under FSDP
                if rank == 0:
                    save_checkpoint(ckpt_path, {"model": model_sd, "optimizer": optim_sd, "state": state})
    finally:
        metrics.close()
        trackers.close()

    wall = state["elapsed"] + (time.time() - seg_start)
    done_steps = steps if status == "completed" else done
    result = {
        "status": status,
        "error": error,
        "lab_version": lab.__version__,
        "run_dir": str(run_dir),
        "params": c["params"],
        "params_total": c["params_total"],
        "param_groups": c["param_groups"],
        "flops_per_token": fpt,
        "flops_per_token_6n": c["flops_per_token_6n"],
        "flops_per_token_chinchilla": c["flops_per_token_chinchilla"],
        "shape": shape.to_dict(),
        "steps": done_steps,
        "tokens": float(done_steps * B),
        "tokens_target": plan["target_tokens"],
        "flops": float(done_steps * B) * fpt,
        "flops_6nd": 6.0 * c["params"] * done_steps * B,
        "batch_tokens": B,
        "batch_seqs": plan["batch_seqs"],
        "micro_batch": micro,
        "grad_accum": accum,
        "seq_len": cfg.data.seq_len,
        "lr": t.lr,
        "lr_final": last_lr,
        "schedule": t.schedule,
        "warmup": t.warmup,
        "weight_decay": t.weight_decay,
        "seed": t.seed,
        "mixture": plan["mixture"],
        "val_weights": plan["val_weights"],
        "corpus": corpus.meta.get("corpus"),
        "tokenizer": corpus.tokenizer,
        "vocab_size": corpus.vocab_size,
        "loss_train": last_loss,
        "grad_norm": last_gnorm,
        "loss_val": last_eval.get("loss_val", float("nan")),
        "bpb_val": last_eval.get("bpb_val", float("nan")),
        "loss_val_domains": {n: last_eval[f"loss_val_{n}"] for n in val_sets if f"loss_val_{n}" in last_eval},
        "bpb_val_domains": {n: last_eval[f"bpb_val_{n}"] for n in val_sets if f"bpb_val_{n}" in last_eval},
        "wall_s": wall,
        "tokens_per_s": done_steps * B / max(1e-9, wall),
        "flops_per_s": done_steps * B * fpt / max(1e-9, wall),
        "device": device.type,
        "dtype": "bfloat16" if dtype else "float32",
        "threads": torch.get_num_threads(),
        "resumes": state["resumes"],
        "gns_B_noise": (state["gns_S"] / state["gns_G2"] if gns is not None and state["gns_G2"] else None),
        "cooldowns": _read_jsonl(cooldowns_path),
        "world_size": world,
        "parallel": (t.parallel if world > 1 else "none"),
        "recipe": cfg.recipe,
        "tags": cfg.tags,
    }
    if world > 1:
        dist.destroy_process_group()
        if rank != 0:
            return result
    bt = None
    if recipe is not None and status == "completed":
        from lab.backtest import compare, report

        try:  # a back-test problem must never cost the run its record
            bt = compare(recipe, result)
            atomic_write_json(run_dir / "backtest.json", bt)
            result["backtest"] = bt["overall"]
        except Exception as e:  # noqa: BLE001
            result["backtest_error"] = f"{type(e).__name__}: {e}"
    atomic_write_json(run_dir / "result.json", result)
    if status == "completed" and ckpt_path.exists() and not t.keep_ckpt:
        ckpt_path.unlink()
    if bt is not None:
        _say(cfg, report(bt))
    _say(
        cfg,
        f"[train] {status}: loss_val={result['loss_val']:.4f} nats/token, bpb_val={result['bpb_val']:.4f} "
        f"| {result['tokens_per_s']:,.0f} tok/s, {result['flops_per_s'] / 1e9:.1f} GFLOP/s | {wall:.1f}s -> {run_dir}",
    )
    return result


def _cooldown_branch(cfg, plan, model, fwd, optimizer, sampler, val_sets, corpus, start: int, device, dtype) -> dict:
    """Fork at ``start``, decay the LR to reach the branch's end step as a WSD run of that length
    would (Hägele et al. 2024, arXiv:2405.18392), evaluate, then restore the main run's state.

    The branch sees the batches the main run sees at the same steps, so a branch ending at step
    s_i is the run a WSD schedule of s_i steps would have been. Its compute is recorded apart.
    """
    t = cfg.train
    end = plan["branches"][start]
    saved = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    w = warmup_steps(t.warmup, plan["steps"])
    for step in range(start, end):
        lr = t.lr * lr_multiplier(step, end, "wsd", w, t.min_lr_ratio, t.decay, t.decay_shape)
        for g in optimizer.param_groups:
            g["lr"] = lr
        micro_batches = (sampler.batch(step, plan["micro_batch"], m)[:2] for m in range(plan["grad_accum"]))
        train_step(fwd, model, optimizer, micro_batches, plan["grad_accum"], device, dtype, t.grad_clip)
    ev = evaluate(model, val_sets, corpus, plan["val_weights"], plan["micro_batch"], device, dtype)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    tokens = float(end * t.batch_tokens)
    return {"branch_start": start, "step": end, "tokens": tokens, "flops": tokens * plan["counts"]["flops_per_token"],
            "branch_flops": (end - start) * t.batch_tokens * plan["counts"]["flops_per_token"], **ev}


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _write_config(cfg: RunConfig, plan: dict[str, Any], run_dir: Path) -> None:
    from omegaconf import OmegaConf

    derived = {k: v for k, v in plan.items() if k not in ("shape", "counts", "branches")}
    derived["cooldown_branches"] = [{"start": a, "end": b} for a, b in sorted(plan["branches"].items())]
    doc = {"config": asdict(cfg), "derived": {**derived, "shape": plan["shape"].to_dict(), **plan["counts"]}}
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(doc)))


@contextlib.contextmanager
def _fsdp_no_sync(model: torch.nn.Module):
    """FSDP2's counterpart of DDP.no_sync: keep gradients local until the last micro-batch."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def _full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool) -> tuple[dict, dict]:
    """Unsharded model and optimizer state (gathered to CPU under FSDP; every rank must call it)."""
    if not fsdp:
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _load_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ckpt: dict, fsdp: bool) -> None:
    if not fsdp:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, optimizer, model_state_dict=ckpt["model"], optim_state_dict=ckpt["optimizer"],
                   options=StateDictOptions(full_state_dict=True))


class _NoTrackers:
    """Ranks other than 0 log nothing."""

    def log(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _say(cfg: RunConfig, msg: str) -> None:
    if cfg.train.progress and _world()[0] == 0:
        print(msg, flush=True)


def _progress(cfg: RunConfig, row: dict[str, Any], steps: int, elapsed: float, fpt: float) -> None:
    eta = elapsed / row["step"] * (steps - row["step"])
    val = f" | val {row['loss_val']:.4f} ({row['bpb_val']:.3f} bpb)" if "loss_val" in row else ""
    print(
        f"  step {row['step']:>6d}/{steps} | loss {row['loss']:.4f} | lr {row['lr']:.2e} | "
        f"{row['tokens_per_s'] / 1e3:7.1f}k tok/s {row['tokens_per_s'] * fpt / 1e9:6.1f} GFLOP/s | "
        f"eta {eta:5.0f}s{val}",
        flush=True,
    )


def _hydra_main() -> None:
    import hydra

    from lab.config import register_configs

    register_configs()
    conf = str(Path(__file__).resolve().parent.parent / "conf")

    @hydra.main(version_base="1.3", config_path=conf, config_name="config")
    def main(cfg) -> None:
        try:
            result = train(cfg)
        except ValueError as e:  # bad config or data: one clear line, no traceback
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        if result["status"] != "completed":
            print(f"[train] run ended with status {result['status']}: {result.get('error')}", file=sys.stderr)
            sys.exit(1)

    main()


if __name__ == "__main__":
    _hydra_main()
