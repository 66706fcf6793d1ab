"""Train a pack: K runs of one shape in one process, ``train_pack(cfgs) -> [record, ...]``.

Each member is the run :func:`lab.train.train` would train from the same config: its own initial
weights (its seed), data order (its seed and mixture), peak LR and schedule, batch, budget, AdamW
settings, cooldown branches and cadences. The pack only changes *where* the arithmetic happens: the
members' weights are stacked (:class:`lab.pack.model.PackedTransformer`) and every *tick* runs one
micro-batch of every member through one forward and backward. A member whose batch is complete
clips and steps with the solo trainer's own optimizer (:func:`lab.step.make_optimizer`, on the
member's view of the pack), then logs, evaluates, branches and checkpoints exactly as a solo run does
at that step; members with larger batches accumulate more micro-batches first. On CPU in fp32 a member
computes the same bits as its solo run when both use the same micro-batch (the sweep packs runs of one
micro-batch only); with a finer split its sums are grouped differently (float rounding).

Each member writes its own run folder through :mod:`lab.runfolder` (``config.yaml``,
``metrics.jsonl``, ``cooldowns.jsonl``, ``ckpt.pt`` in the solo format, ``result.json``), so tables,
fits and resume cannot tell a packed run from a solo one; the record's ``pack_members`` says it was
packed. A member that finishes or diverges leaves the pack (its record is written at once) and the
rest go on. A killed pack started again resumes every member from its own checkpoint (members may
stand at different steps); a completed member is skipped, and one held by another process is
reported ``busy``. An exception records every unfinished member as failed before it propagates.

A cooldown branch forks the members that reach its start at the same step into a pack of their own
(copies), decays their LR as a WSD run ending at the branch's end would, evaluates and discards it.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

import torch

from lab.checkpoint import read_jsonl, save_checkpoint
from lab.compile import decide, mark_compiled, shape_key, warm
from lab.config import RunConfig, to_run_config
from lab.data import load_corpus
from lab.data.mixture import MixtureSampler, validation_set
from lab.data.shards import TokenCorpus
from lab.hardware import autocast, autocast_dtype, keep_freed_memory, pick_device
from lab.io import atomic_write_json, try_locked
from lab.model import Transformer
from lab.pack.grouping import key_difference, pack_key, pack_micro
from lab.pack.model import PackedTransformer
from lab.pack.step import Group, Hardware
from lab.plan import RunPlan, plan_run
from lab.record import failure_record, result_record
from lab.runfolder import (
    PROGRESS_EVERY_S,
    check_same_corpus,
    append_jsonl,
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
    write_config,
)
from lab.schedule import lr_multiplier, warmup_steps
from lab.step import eval_summary
from lab.trackers import Trackers

DEFAULT_BUDGET_BYTES = 2 * 1024**3  # activations of one pack, unless the caller says otherwise


@dataclass
class Member:
    """One run inside a pack: its config, plan, data order and the solo loop's bookkeeping."""

    cfg: RunConfig
    plan: RunPlan
    run_dir: Path
    sampler: MixtureSampler
    split: int  # the pack's micro-batches per solo micro-batch (plan.micro_batch = split x the pack's)
    state: dict[str, Any] = field(default_factory=fresh_state)
    last: dict[str, Any] = field(default_factory=lambda: {"loss": float("nan"), "lr": 0.0, "grad_norm": 0.0,
                                                          "eval": {}})
    clock: dict[str, float] = field(default_factory=dict)
    metrics: IO[str] | None = None
    trackers: Any = None
    record: dict[str, Any] | None = None  # set when the member ended
    _drawn: tuple[tuple[int, int], torch.Tensor, torch.Tensor] | None = None

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "ckpt.pt"

    @property
    def accum(self) -> int:
        """The pack's micro-batches per optimizer step."""
        return self.plan.grad_accum * self.split

    def micro_batch(self, step: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The j-th of the pack's micro-batches of ``step``: a slice of the solo run's micro-batch
        ``j // split`` (drawn once), so the member sees exactly the sequences its solo run sees."""
        m, c = divmod(j, self.split)
        if self._drawn is None or self._drawn[0] != (step, m):
            x, y, _ = self.sampler.batch(step, self.plan.micro_batch, m)
            self._drawn = ((step, m), x, y)
        _, x, y = self._drawn
        rows = self.plan.micro_batch // self.split
        return x[c * rows: (c + 1) * rows], y[c * rows: (c + 1) * rows]


@dataclass
class Lane:
    """A member inside one loop of ticks (the main run, or a cooldown branch from ``step`` to ``end``)."""

    member: Member
    step: int  # the next optimizer step to take (0-based)
    end: int  # the loop ends after this many steps
    lr_at: Callable[[int], float]
    micro_i: int = 0


@dataclass
class Context:
    """What every member shares: hardware, the corpus, the validation windows, the micro-batch."""

    hw: Hardware
    corpus: TokenCorpus
    val_sets: dict[str, torch.Tensor]
    micro: int  # sequences per member per forward
    eval_rows: int  # validation sequences per member per forward (bounded by the logits' memory)
    pack_members: int  # members the pack started with (the record's pack_members)
    compile_key: str  # the shared compile cache's name for this pack's step (lab.compile)

    def hardware(self) -> dict[str, Any]:
        """The record's hardware fields."""
        return {"device": self.hw.device.type, "dtype": "bfloat16" if self.hw.dtype else "float32",
                "threads": torch.get_num_threads(), "world_size": 1, "parallel": "none",
                "pack_members": self.pack_members, "compiled": self.hw.use_compile}


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def train_pack(cfgs: list[RunConfig | Any], budget_bytes: float = DEFAULT_BUDGET_BYTES) -> list[dict[str, Any]]:
    """Train (or resume, or skip when done) every run of ``cfgs`` as one pack; one record per config,
    in order. ``budget_bytes`` bounds the pack's activation memory (it sets the micro-batch).

    Raises ValueError naming the field when the runs cannot share a pack (a different shape, corpus
    or hardware setting), before anything is trained.
    """
    cfgs = [to_run_config(c) for c in cfgs]
    for c in cfgs:
        c.validate()
        if c.recipe:
            raise ValueError(f"recipe: {c.run_dir} trains from a recipe; recipe runs train alone (lab.train)")
    records: list[dict[str, Any] | None] = [completed_record(Path(c.run_dir)) for c in cfgs]
    with contextlib.ExitStack() as stack:
        todo = []
        for i, c in enumerate(cfgs):
            if records[i] is not None:
                say(c, f"[pack] {c.run_dir} already completed; skipping")
                continue
            Path(c.run_dir).mkdir(parents=True, exist_ok=True)
            if not stack.enter_context(try_locked(Path(c.run_dir) / ".lock")):
                records[i] = {"status": "busy", "run_dir": c.run_dir,
                              "error": f"{c.run_dir} is being trained by another process; skipping"}
                continue
            prev = completed_record(Path(c.run_dir))
            if prev is not None:
                records[i] = prev
            else:
                todo.append(i)
        if todo:
            for i, rec in zip(todo, _train([cfgs[i] for i in todo], budget_bytes)):
                records[i] = rec
    return [r for r in records if r is not None]


def _train(cfgs: list[RunConfig], budget_bytes: float) -> list[dict[str, Any]]:
    started = time.time()
    members: list[Member] = []
    try:
        group, ctx, members = setup(cfgs, budget_bytes)
        for m in members:
            m.clock = {"seg_start": time.time(), "seg_tokens": 0, "last_print": time.time()}
        run_ticks(group, ctx, [Lane(m, m.state["step"], m.plan.steps, _main_lr(m)) for m in members], _main_steps)
        return [m.record for m in members]
    except Exception as e:  # every unfinished member is recorded failed: failed runs are never lost
        for c in cfgs:
            m = next((m for m in members if m.cfg is c), None)
            if m is not None and m.record is not None:
                continue
            if m is not None:
                _close(m)
            try:
                atomic_write_json(Path(c.run_dir) / "result.json", failure_record(c, e, started))
            except OSError as w:
                print(f"[pack] could not write the failure record of {c.run_dir}: {w}", flush=True)
        raise


# --------------------------------------------------------------------------------------------
# Setup and resume
# --------------------------------------------------------------------------------------------


def setup(cfgs: list[RunConfig], budget_bytes: float) -> tuple[Group, Context, list[Member]]:
    """Device, data, plans, checks, the packed model (each member from its seed or checkpoint), optimizer."""
    first = cfgs[0]
    t = first.train
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    keep_freed_memory()
    device = pick_device(t.device)
    dtype = autocast_dtype(t.dtype, device)
    corpus = load_corpus(first.data, progress=t.progress)
    plans = [plan_run(c, corpus) for c in cfgs]
    _check_packable(cfgs, plans)
    shape = plans[0].shape
    micro = pack_micro([p.micro_batch for p in plans], len(cfgs), shape, budget_bytes)
    model = PackedTransformer.from_seeds(shape, [c.train.seed for c in cfgs], first.model).to(device)
    _check_counts(model, plans[0])
    val_sets = {n: validation_set(corpus, n, first.data.seq_len, first.data.val_tokens) for n in plans[0].eval_domains}
    key = shape_key(shape, device.type, len(cfgs))
    dec = decide(t.compile, device.type, sum(p.flops_with_branches(c.train.batch_tokens) for c, p in zip(cfgs, plans)),
                 torch.get_num_threads(), warm(key))
    hw = Hardware(device, dtype, dec.on)
    logits_bytes = 12.0 * len(cfgs) * shape.seq_len * shape.vocab_size  # logits, softmax, loss terms per row
    eval_rows = max(1, min(plans[0].micro_batch, int(budget_bytes // logits_bytes)))  # the solo run's chunks
    ctx = Context(hw, corpus, val_sets, micro, eval_rows, len(cfgs), key)
    group = Group(model, [c.train for c in cfgs], hw)
    members = []
    for k, (c, p) in enumerate(zip(cfgs, plans)):
        m = Member(c, p, Path(c.run_dir), MixtureSampler(corpus, p.mixture, c.data.seq_len, c.train.seed),
                   p.micro_batch // micro)
        write_config(c, p, m.run_dir)
        _resume(m, k, group, corpus)
        m.metrics = open(m.run_dir / "metrics.jsonl", "a", encoding="utf-8")
        m.trackers = Trackers(c, m.run_dir, asdict(c))
        members.append(m)
    say(first, f"[pack] {len(cfgs)} runs of N={plans[0].counts['params']:,} (layers={shape.num_layers} "
               f"d={shape.d_model}) in one pack | micro-batch {micro} seqs per member | {device.type}"
               f"{'/bf16' if dtype else '/fp32'} | compile {'on' if dec.on else 'off'} ({dec.reason})")
    return group, ctx, members


def _check_packable(cfgs: list[RunConfig], plans: list[RunPlan]) -> None:
    """Every member must share the first one's pack key; name the field that differs."""
    for c, p in zip(cfgs, plans):
        if pack_key(c, p.shape) is None:
            raise ValueError(f"train.gns: {c.run_dir} measures the gradient noise scale, which needs one model "
                             "per process; train it alone (lab.train)")
        if p.shape != plans[0].shape:
            raise ValueError(f"model: {c.run_dir} cannot share a pack with {cfgs[0].run_dir}: shape {p.shape} vs "
                             f"{plans[0].shape}")
        diff = key_difference(cfgs[0], c)
        if diff is not None:
            raise ValueError(f"{diff.split()[0]}: {c.run_dir} cannot share a pack with {cfgs[0].run_dir} "
                             f"({diff}); members must share it")


def _check_counts(model: PackedTransformer, plan: RunPlan) -> None:
    """The formula and the module must agree exactly, as the solo trainer checks."""
    real = Transformer(plan.shape, model.cfg).param_groups()
    if real != plan.counts["param_groups"]:  # pragma: no cover - the solo trainer's own check
        raise AssertionError(f"parameter formula {plan.counts['param_groups']} != module {real}")


def _resume(m: Member, k: int, group: Group, corpus: TokenCorpus) -> None:
    """Member k from its checkpoint when there is one (metrics cut back to it), else fresh."""
    ckpt = readable_checkpoint(m.ckpt_path)
    if ckpt is None:
        start_line_files(m.run_dir)
        return
    check_same_corpus(m.cfg, ckpt, corpus.fingerprint, m.ckpt_path)
    group.views[k].load_state_dict(ckpt["model"])
    group.opts[k].load_state_dict(ckpt["optimizer"])
    m.state = ckpt["state"]
    m.state["resumes"] += 1
    cut_back_line_files(m.run_dir, m.state["step"])
    say(m.cfg, f"[pack] resuming {m.run_dir} from step {m.state['step']}/{m.plan.steps}")


def _main_lr(m: Member) -> Callable[[int], float]:
    t, steps = m.cfg.train, m.plan.steps
    return lambda step: t.lr * lr_multiplier(step, steps, t.schedule, t.warmup, t.min_lr_ratio, t.decay,
                                             t.decay_shape)


# --------------------------------------------------------------------------------------------
# Ticks
# --------------------------------------------------------------------------------------------


OnSteps = Callable[[Group, Context, list[int], list[float], list[float], list[float], list[Lane]], set[int]]


def run_ticks(group: Group, ctx: Context, lanes: list[Lane], on_steps: OnSteps) -> None:
    """Advance every lane one micro-batch per tick until each has taken its ``end``-th step.

    After each tick the lanes whose batch is complete are clipped and stepped; ``on_steps(group, ctx,
    indices, losses, grad_norms, lrs, lanes)`` then does their bookkeeping and returns the indices of
    lanes to drop (ended, diverged). Lanes that reach ``end`` are dropped too; the group shrinks to the rest.
    """
    device = ctx.hw.device
    loss_sum = torch.zeros(len(lanes), device=device)
    while lanes:
        x, y = _tick_batch(lanes, ctx.micro, device)
        accum = torch.tensor([ln.member.accum for ln in lanes], dtype=torch.float32, device=device)
        with autocast(device, ctx.hw.dtype):
            losses = group.fwd(x, y)
        (losses / accum).sum().backward()
        loss_sum += losses.detach().float()
        for ln in lanes:
            ln.micro_i += 1
        stepping = [i for i, ln in enumerate(lanes) if ln.micro_i == ln.member.accum]
        if not stepping:
            continue
        lrs = [lanes[i].lr_at(lanes[i].step) for i in stepping]
        norms = [group.step(i, lr) for i, lr in zip(stepping, lrs)]
        group.zero_grad(stepping)
        step_losses = (loss_sum[stepping] / accum[stepping]).tolist()  # one sync per tick that steps
        loss_sum[stepping] = 0.0
        for i in stepping:
            lanes[i].step += 1
            lanes[i].micro_i = 0
        drop = on_steps(group, ctx, stepping, step_losses, norms, lrs, lanes)
        drop |= {i for i in stepping if lanes[i].step >= lanes[i].end}
        if drop:
            keep = [i for i in range(len(lanes)) if i not in drop]
            if keep:
                group = group.select(keep)
                loss_sum = loss_sum[keep]
            lanes = [lanes[i] for i in keep]


def _tick_batch(lanes: list[Lane], micro: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (K, micro, T): lane k's next micro-batch, drawn as its solo run draws it."""
    xs, ys = [], []
    for ln in lanes:
        x, y = ln.member.micro_batch(ln.step, ln.micro_i)
        xs.append(x)
        ys.append(y)
    return torch.stack(xs).to(device, non_blocking=True), torch.stack(ys).to(device, non_blocking=True)


# --------------------------------------------------------------------------------------------
# The main loop's bookkeeping: log, evaluate, branch, checkpoint, finish (as lab.train does per step)
# --------------------------------------------------------------------------------------------


def _main_steps(group: Group, ctx: Context, idx: list[int], losses: list[float], norms: list[float],
                lrs: list[float], lanes: list[Lane]) -> set[int]:
    """``on_steps`` of the main run: the solo loop's per-step work (log, evaluate, stop on divergence,
    branch, checkpoint, finish) for the members in ``idx``, which just stepped."""
    diverged, logs = {}, []
    for i, loss, gnorm, lr in zip(idx, losses, norms, lrs):
        m, done = lanes[i].member, lanes[i].step
        st, t = m.state, m.cfg.train
        m.clock["seg_tokens"] += t.batch_tokens
        if st["initial_loss"] is None:
            st["initial_loss"] = loss
        st["win_loss"] += loss
        st["win_n"] += 1
        m.last.update(loss=loss, lr=lr, grad_norm=gnorm)
        if not math.isfinite(loss) or loss > t.diverge_factor * st["initial_loss"]:
            diverged[i] = f"loss {loss:.4g} at step {done} (initial {st['initial_loss']:.4g}, factor {t.diverge_factor})"
        if done % m.plan.log_every == 0 or done == m.plan.steps or i in diverged:
            logs.append(i)
    evals = [i for i in logs if i not in diverged and eval_due(lanes[i].member.plan, lanes[i].step)]
    results = evaluate_members(group, ctx, evals, [lanes[i].member.plan.val_weights for i in evals])
    for i in logs:
        _log_row(lanes[i].member, lanes[i].step, results.get(i))
    for i, why in diverged.items():
        _finish(lanes[i].member, ctx, "diverged", why, steps=lanes[i].step)
    branching = [i for i in idx if i not in diverged and lanes[i].step in lanes[i].member.plan.branches]
    if branching:
        _branches(group, ctx, branching, lanes)
    saved = []
    for i in idx:
        m, done = lanes[i].member, lanes[i].step
        if i in diverged:
            continue
        if done == m.plan.steps:
            _finish(m, ctx, "completed", None)
        elif m.plan.ckpt_every > 0 and done % m.plan.ckpt_every == 0:
            _checkpoint(group, i, m, done)
            saved.append(m)
    if saved and hold_after_checkpoint(saved[0].state):  # the test hook, once every member due has saved
        for m in saved:
            m.clock["seg_start"] = time.time()
    return set(diverged)


def _log_row(m: Member, done: int, ev: dict[str, float] | None) -> None:
    now = time.time()
    elapsed = m.state["elapsed"] + (now - m.clock["seg_start"])
    row = metrics_row(m.cfg, m.plan, m.state, m.last, done, elapsed,
                      m.clock["seg_tokens"] / max(1e-9, now - m.clock["seg_start"]))
    if ev is not None:
        m.last["eval"] = ev
        row.update(ev)
    m.metrics.write(_json(row) + "\n")
    m.metrics.flush()
    m.trackers.log(row)
    if m.cfg.train.progress and ("loss_val" in row or done == m.plan.steps
                                 or now - m.clock["last_print"] >= PROGRESS_EVERY_S):
        print_progress(row, m.plan.steps, elapsed, m.plan.flops_per_token, prefix=f"{m.run_dir.name}: ")
        m.clock["last_print"] = now


def _json(row: dict[str, Any]) -> str:
    import json

    return json.dumps(row)


def _checkpoint(group: Group, i: int, m: Member, done: int) -> None:
    """Member i's checkpoint at step ``done``, in the solo trainer's format."""
    m.metrics.flush()
    m.state["step"] = done
    m.state["elapsed"] += time.time() - m.clock["seg_start"]
    m.clock["seg_start"], m.clock["seg_tokens"] = time.time(), 0
    model_sd = {k: v.clone() for k, v in group.views[i].state_dict().items()}  # views would save the pack
    save_checkpoint(m.ckpt_path, {"model": model_sd, "optimizer": group.opts[i].state_dict(),
                                  "state": m.state, "corpus": m.sampler.corpus.fingerprint})


def _finish(m: Member, ctx: Context, status: str, error: str | None, steps: int | None = None) -> None:
    """Write member m's record: it leaves the pack."""
    wall = m.state["elapsed"] + (time.time() - m.clock["seg_start"])
    run = {"status": status, "error": error, "run_dir": str(m.run_dir),
           "steps": m.plan.steps if status == "completed" else steps, "wall_s": wall,
           "corpus": m.sampler.corpus.meta.get("corpus"), "tokenizer": m.sampler.corpus.tokenizer,
           "vocab_size": m.sampler.corpus.vocab_size, "cooldowns": read_jsonl(m.run_dir / "cooldowns.jsonl"),
           "corpus_fingerprint": m.sampler.corpus.fingerprint, "recipe_sha256": None}
    m.record = result_record(m.cfg, m.plan, run, m.state, m.last, ctx.hardware())
    if ctx.hw.use_compile:
        mark_compiled(ctx.compile_key)
    _close(m)
    atomic_write_json(m.run_dir / "result.json", m.record)
    ckpt = m.ckpt_path
    if status == "completed" and ckpt.exists() and not m.cfg.train.keep_ckpt:
        ckpt.unlink()
    say(m.cfg, finish_message(m.record, wall, m.run_dir))


def _close(m: Member) -> None:
    if m.metrics is not None and not m.metrics.closed:
        m.metrics.close()
    if m.trackers is not None:
        m.trackers.close()
        m.trackers = None


# --------------------------------------------------------------------------------------------
# Cooldown branches and evaluation
# --------------------------------------------------------------------------------------------


def _branches(group: Group, ctx: Context, idx: list[int], lanes: list[Lane]) -> None:
    """Fork the members in ``idx`` (each at a branch start) into a pack of copies, run each branch's
    WSD decay to its end (Hägele et al. 2024, arXiv:2405.18392), evaluate, and write the rows."""
    sub = group.select(idx, copy_state=True)
    branch = []
    for i in idx:
        m, start = lanes[i].member, lanes[i].step
        t, end = m.cfg.train, m.plan.branches[start]
        w = warmup_steps(t.warmup, m.plan.steps)
        lr_at = (lambda t, end, w: lambda s: t.lr * lr_multiplier(s, end, "wsd", w, t.min_lr_ratio, t.decay,
                                                                 t.decay_shape))(t, end, w)
        branch.append(Lane(m, start, end, lr_at))
    starts = {id(ln): ln.step for ln in branch}

    def at_end(g: Group, c: Context, stepped: list[int], _l: list[float], _n: list[float], _r: list[float],
               ls: list[Lane]) -> set[int]:
        ended = [i for i in stepped if ls[i].step >= ls[i].end]
        results = evaluate_members(g, c, ended, [ls[i].member.plan.val_weights for i in ended])
        for i in ended:
            m = ls[i].member
            row = cooldown_row(m.plan, m.cfg.train.batch_tokens, starts[id(ls[i])], ls[i].end, results[i])
            append_jsonl(m.run_dir / "cooldowns.jsonl", row)
            say(m.cfg, f"  {m.run_dir.name}: cooldown branch to D={row['tokens']:.4g}: loss_val {row['loss_val']:.4f}")
        return set(ended)

    run_ticks(sub, ctx, branch, at_end)


@torch.no_grad()
def evaluate_members(group: Group, ctx: Context, idx: list[int], weights: list[dict[str, float]]
                     ) -> dict[int, dict[str, float]]:
    """{member index: evaluation row} for the members in ``idx``: :func:`lab.step.evaluate`'s row, from
    one packed forward per chunk of validation windows and each member's own loss sum over it."""
    if not idx:
        return {}
    device = ctx.hw.device
    model = group.model if idx == list(range(group.model.members)) else group.model.select(idx)
    K = model.members
    losses: list[dict[str, float]] = [{} for _ in idx]
    for name, rows in ctx.val_sets.items():
        totals, count = [0.0] * K, 0
        for j in range(0, len(rows), ctx.eval_rows):
            chunk = rows[j: j + ctx.eval_rows].to(device, non_blocking=True)
            with autocast(device, ctx.hw.dtype):
                logits = model(chunk[:, :-1].unsqueeze(0).expand(K, -1, -1))
            targets = chunk[:, 1:].reshape(-1)
            for k in range(K):
                totals[k] += float(torch.nn.functional.cross_entropy(
                    logits[k].float().reshape(-1, logits.shape[-1]), targets, reduction="sum"))
            count += chunk[:, 1:].numel()
        for k in range(K):
            losses[k][name] = totals[k] / count
    return {i: eval_summary(losses[k], ctx.corpus, w) for k, (i, w) in enumerate(zip(idx, weights))}
