"""Plan a run before any compute is spent: shape, counts, steps, batch split, mixture, cadences.

:func:`plan_run` turns a validated :class:`lab.config.RunConfig` and the loaded corpus into a
frozen :class:`RunPlan`. Everything the trainer derives from the config is decided here, checked
against the data, and written to ``config.yaml`` (``derived``) so a run folder says what it did.
Pure arithmetic on the config and the corpus' sizes: no torch, no model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lab.config import RunConfig
from lab.counting import Shape, counts, shape_from_config, steps_for_tokens, tokens_for_flops
from lab.data.mixture import resolve_mixture
from lab.data.shards import TokenCorpus
from lab.schedule import check_warmup, warmup_steps

EVAL_BUDGET_FRACTION = 0.1  # automatic intermediate evals cost at most ~10% of training FLOPs
MAX_AUTO_EVALS = 20  # train.eval_every=0: at most this many evaluations
AUTO_LOG_LINES = 100  # train.log_every=0: about this many metrics rows
AUTO_CKPTS = 10  # train.ckpt_every=0: about this many checkpoints


@dataclass(frozen=True)
class RunPlan:
    """What a run will do, derived from its config and corpus (counts in the units of :mod:`lab.counting`)."""

    shape: Shape
    counts: dict[str, Any]  # N, N_total, parameter groups, FLOPs per token (lab.counting.counts)
    mixture: dict[str, float]  # training share per domain
    val_weights: dict[str, float]  # weights combining per-domain validation losses into loss_val
    eval_domains: list[str]  # every domain is evaluated, trained on or not (mixing laws need them all)
    batch_seqs: int  # B in sequences
    micro_batch: int  # sequences per forward/backward
    grad_accum: int  # micro-batches per optimizer step
    target_tokens: float  # the D requested (train.tokens, or train.flops / flops_per_token)
    steps: int  # optimizer steps: round(D / B)
    tokens: float  # D achieved: steps * B
    flops: float  # C achieved: D * flops_per_token
    eval_every: int
    log_every: int
    ckpt_every: int  # -1: never
    branches: dict[int, int] = field(default_factory=dict)  # cooldown branch start step -> end step

    @property
    def flops_per_token(self) -> float:
        return self.counts["flops_per_token"]

    def flops_with_branches(self, batch_tokens: int) -> float:
        """C of the main run plus its cooldown branches' own steps (what the run computes in all)."""
        return self.flops + sum(end - start for start, end in self.branches.items()) * batch_tokens * self.flops_per_token

    def derived(self) -> dict[str, Any]:
        """The ``derived`` section of ``config.yaml``: plain values only."""
        skip = ("shape", "counts", "branches")
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in skip}
        out["cooldown_branches"] = [{"start": a, "end": b} for a, b in sorted(self.branches.items())]
        return {**out, "shape": self.shape.to_dict(), **self.counts}


def plan_run(cfg: RunConfig, corpus: TokenCorpus) -> RunPlan:
    """Derive shape, counts, steps, batch split, mixture and cadences; validate against the data."""
    t, d = cfg.train, cfg.data
    shape = shape_from_config(cfg.model, corpus.vocab_size, d.seq_len)
    c = counts(shape)
    natural = corpus.train_tokens()
    mixture = resolve_mixture(d.mixture, corpus.names, natural)
    if isinstance(d.val_weights, str) and d.val_weights == "mixture":
        val_weights = dict(mixture)
    else:
        val_weights = resolve_mixture(d.val_weights, corpus.names, natural, field="data.val_weights")
    batch_seqs = t.batch_tokens // d.seq_len
    micro = t.micro_batch or batch_seqs
    target_tokens = float(t.tokens) if t.tokens is not None else tokens_for_flops(float(t.flops), shape)
    steps = steps_for_tokens(target_tokens, t.batch_tokens, "train.tokens" if t.tokens is not None else "train.flops")
    tokens = float(steps * t.batch_tokens)
    check_warmup(t.warmup, steps, t.batch_tokens)
    val_tokens_total = sum(min(d.val_tokens, len(corpus.domains[n].val)) for n in corpus.names)
    return RunPlan(
        shape=shape, counts=c, mixture=mixture, val_weights=val_weights, eval_domains=list(corpus.names),
        batch_seqs=batch_seqs, micro_batch=micro, grad_accum=batch_seqs // micro, target_tokens=target_tokens,
        steps=steps, tokens=tokens, flops=tokens * c["flops_per_token"],
        eval_every=_eval_every(t.eval_every, steps, tokens, val_tokens_total),
        log_every=t.log_every if t.log_every > 0 else max(1, steps // AUTO_LOG_LINES),
        ckpt_every=t.ckpt_every if t.ckpt_every != 0 else max(1, steps // AUTO_CKPTS),
        branches=_cooldown_branches(cfg, steps, tokens),
    )


def _eval_every(asked: int, steps: int, tokens: float, val_tokens_total: int) -> int:
    """``asked`` when set; else evaluations spaced so they cost about EVAL_BUDGET_FRACTION of training
    (a forward-only token costs ~1/3 of a training token), at most MAX_AUTO_EVALS of them."""
    if asked > 0:
        return asked
    n_evals = min(MAX_AUTO_EVALS, int(EVAL_BUDGET_FRACTION * 3 * tokens / max(1, val_tokens_total)))
    return max(1, steps // n_evals if n_evals > 0 else steps)


def _cooldown_branches(cfg: RunConfig, steps: int, tokens: float) -> dict[int, int]:
    """Start step -> end step of each WSD cooldown branch (``train.cooldowns``, in tokens)."""
    t = cfg.train
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
    return branches
