"""Sweep designs: grids of proxy runs computed from a few numbers, never typed by hand.

Each design function returns a list of :class:`RunSpec`: the Hydra-style overrides of one run
(``model.num_layers=3``, ``train.flops=1e12``, ...) plus the derived N, D, C, batch, LR and
mixture, so a sweep can print its plan (:func:`plan_table`) before any compute is spent. Pure
arithmetic on :mod:`lab.counting`; no torch.

* :func:`isoflop`: for each budget C, ``n_sizes`` model sizes log-spaced from ``1/spread`` to
  ``spread`` times a prior compute-optimal N (Hoffmann et al. 2022, arXiv:2203.15556, approach 2),
  each given the D that spends exactly C (to within half a batch).
* :func:`kaplan`: a model-size x token-budget grid (Kaplan et al. 2020, arXiv:2001.08361).
* :func:`batch_lr`: batch size x learning rate at several budgets, model size from the prior
  (DeepSeek LLM, arXiv:2401.02954; Li et al. 2025 "Step Law", arXiv:2503.04715).
* :func:`mixtures`: domain mixtures (Dirichlet-sampled, or the axial design) at several sizes (Ye et al. 2024,
  arXiv:2403.16952; Liu et al. 2024 "RegMix", arXiv:2407.01492).

The prior for the compute-optimal size is ``D = tokens_per_param * N`` (20, Chinchilla's rule of
thumb), solved with the lab's FLOP convention: ``C = flops_per_token(N) * tokens_per_param * N``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from lab.counting import (
    ASPECT,
    DESIGN_HEAD_DIM,
    Shape,
    convention_flops_per_token,
    counts,
    flops_per_token,
    shape_for_params,
    steps_for_tokens,
    tokens_for_flops,
)

SHAPE_KEYS = ("num_layers", "d_model", "num_heads", "num_kv_heads", "d_ff")


@dataclass
class RunSpec:
    """One planned run: overrides for ``lab.train`` and the quantities they imply."""

    name: str
    overrides: dict[str, Any]
    params: int
    tokens: float
    flops: float
    batch_tokens: int
    lr: float
    mixture: Any = "natural"
    tags: dict[str, Any] = field(default_factory=dict)
    cooldowns: list[float] = field(default_factory=list)  # WSD cooldown branches (tokens) of this run

    def override_list(self) -> list[str]:
        return [f"{k}={_fmt_override(v)}" for k, v in self.overrides.items()]


def _fmt_override(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt_override(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_override(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    return str(v)


@dataclass(frozen=True)
class ShapeRule:
    """What is fixed across a design: vocabulary, context, aspect ratio, head size."""

    vocab_size: int = 256
    seq_len: int = 256
    aspect: int = ASPECT
    head_dim: int = DESIGN_HEAD_DIM  # small heads give finer size steps at the tiny end of a design
    kv_ratio: int = 1

    def shape(self, params: float) -> Shape:
        return shape_for_params(
            params, vocab_size=self.vocab_size, seq_len=self.seq_len, aspect=self.aspect,
            head_dim=self.head_dim, kv_ratio=self.kv_ratio,
        )


def prior_optimal_params(flops: float, rule: ShapeRule, tokens_per_param: float = 20.0) -> float:
    """N with ``flops_per_token(N) * tokens_per_param * N = C`` (bisection in log N).

    The shape inside ``flops_per_token`` is the continuous shape rule (N ~ 12 d^2 L with
    d = aspect * L), which is all a prior needs and costs nothing to evaluate.
    """
    if not (flops > 0 and math.isfinite(flops)):
        raise ValueError(f"design budget: FLOPs must be positive and finite, got {flops!r}")

    def fpt(n: float) -> float:
        layers = (n / (12 * rule.aspect**2)) ** (1 / 3)
        return convention_flops_per_token(n, rule.aspect * layers, layers, rule.vocab_size, rule.seq_len)

    lo, hi = 1e1, 1e15
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if fpt(mid) * tokens_per_param * mid < flops else (lo, mid)
    return math.sqrt(lo * hi)


def _spec(name: str, shape: Shape, flops: float | None, tokens: float | None, batch: int, lr: float,
          mixture: Any = "natural", tags: dict[str, Any] | None = None) -> RunSpec:
    fpt = flops_per_token(shape)
    target = tokens if tokens is not None else tokens_for_flops(flops, shape)
    steps = steps_for_tokens(target, batch, f"design point {name} (N={counts(shape)['params']:,})")
    over: dict[str, Any] = {f"model.{k}": getattr(shape, k) for k in SHAPE_KEYS}
    over["train.batch_tokens"] = batch
    over["train.lr"] = lr
    if flops is not None:
        over["train.flops"] = float(flops)
    else:
        over["train.tokens"] = float(tokens)
    if mixture != "natural":
        over["data.mixture"] = mixture
    return RunSpec(
        name=name, overrides=over, params=counts(shape)["params"], tokens=steps * batch * 1.0,
        flops=steps * batch * fpt, batch_tokens=batch, lr=lr, mixture=mixture, tags=dict(tags or {}),
    )


def log_spread(center: float, n: int, spread: float) -> list[float]:
    """``n`` values log-spaced from center/spread to center*spread (just center when n == 1)."""
    if n < 1 or spread < 1:
        raise ValueError(f"design: need n_sizes >= 1 and spread >= 1, got {n}, {spread}")
    if n == 1:
        return [center]
    return [center * spread ** (2 * k / (n - 1) - 1) for k in range(n)]


def isoflop(budgets: Sequence[float], n_sizes: int = 5, spread: float = 4.0, batch_tokens: int = 4096,
            lr: float = 3e-3, rule: ShapeRule = ShapeRule(), tokens_per_param: float = 20.0) -> list[RunSpec]:
    """IsoFLOP profiles: per budget, ``n_sizes`` shapes around the prior optimum, each spending C.

    Two size targets that round to the same shape give one run (the first index keeps it).
    """
    if not budgets:
        raise ValueError("isoflop design: the list of budgets is empty")
    out = []
    for C in budgets:
        seen: set[tuple[int, int]] = set()
        for k in range(n_sizes):
            s = isoflop_point(C, k, n_sizes, spread, batch_tokens, lr, rule, tokens_per_param)
            key = (s.overrides["model.num_layers"], s.overrides["model.d_model"])
            if key not in seen:
                seen.add(key)
                out.append(s)
    return out


def isoflop_point(C: float, k: int, n_sizes: int = 5, spread: float = 4.0, batch_tokens: int = 4096,
                  lr: float = 3e-3, rule: ShapeRule = ShapeRule(), tokens_per_param: float = 20.0) -> RunSpec:
    """Size ``k`` of ``n_sizes`` of the IsoFLOP profile at budget C."""
    n = log_spread(prior_optimal_params(C, rule, tokens_per_param), n_sizes, spread)[k]
    return _spec(f"C{C:.0e}_n{k}", rule.shape(n), C, None, batch_tokens, lr,
                 tags={"design": "isoflop", "budget": float(C), "size_index": k})


def kaplan(sizes: Sequence[float], tokens: Sequence[float], batch_tokens: int = 4096, lr: float = 3e-3,
           rule: ShapeRule = ShapeRule()) -> list[RunSpec]:
    """Model size x token budget grid."""
    if not sizes or not tokens:
        raise ValueError("kaplan design: sizes and tokens must both be non-empty")
    return [kaplan_point(n, d, batch_tokens, lr, rule, i, j) for i, n in enumerate(sizes) for j, d in enumerate(tokens)]


def kaplan_point(n: float, d: float, batch_tokens: int = 4096, lr: float = 3e-3, rule: ShapeRule = ShapeRule(),
                 i: int = 0, j: int = 0) -> RunSpec:
    """The run of target size ``n`` trained on ``d`` tokens."""
    return _spec(f"N{i}_D{d:.0e}", rule.shape(n), None, d, batch_tokens, lr,
                 tags={"design": "kaplan", "size_index": i, "token_index": j})


def served_budgets(params: float, budgets: Sequence[float], spread: float, rule: ShapeRule = ShapeRule(),
                   tokens_per_param: float = 20.0) -> list[float]:
    """The budgets whose IsoFLOP window (``1/spread`` to ``spread`` x the prior optimum) holds N."""
    return sorted(float(C) for C in budgets
                  if 1 / spread <= params / prior_optimal_params(C, rule, tokens_per_param) <= spread)


def isoflop_wsd_point(sizes: Sequence[float], k: int, budgets: Sequence[float], spread: float = 4.0,
                      batch_tokens: int = 4096, lr: float = 3e-3, rule: ShapeRule = ShapeRule(),
                      tokens_per_param: float = 20.0) -> RunSpec | None:
    """Size ``k`` as one WSD run that serves every IsoFLOP profile its size belongs to.

    The run trains to the largest budget whose window holds it, and WSD cooldown branches end at
    the D of each smaller one (Hägele et al. 2024, arXiv:2405.18392): one run, several points of
    the IsoFLOP grid, for about 1.1x the cost of its largest. None when the size serves no budget.
    """
    shape = rule.shape(sizes[k])
    n = counts(shape)["params"]
    served = served_budgets(n, budgets, spread, rule, tokens_per_param)
    if not served:
        return None
    spec = _spec(f"n{k}", shape, served[-1], None, batch_tokens, lr,
                 tags={"design": "isoflop_wsd", "size_index": k,
                       "budgets": ",".join(f"{C:.4g}" for C in served)})
    spec.cooldowns = [float(steps_for_tokens(tokens_for_flops(C, shape), batch_tokens, f"budget {C:.3g}") * batch_tokens)
                      for C in served[:-1]]
    if spec.cooldowns:
        spec.overrides["train.cooldowns"] = spec.cooldowns
    return spec


def batch_lr(budgets: Sequence[float], batches: Sequence[int], lrs: Sequence[float],
             rule: ShapeRule = ShapeRule(), tokens_per_param: float = 20.0) -> list[RunSpec]:
    """Batch size x peak LR at each budget; the model is the prior compute-optimal size."""
    if len(batches) < 2 or len(lrs) < 2:
        raise ValueError("batch_lr design: need at least two batch sizes and two learning rates to locate an optimum")
    return [batch_lr_point(C, b, lr, rule, tokens_per_param) for C in budgets for b in batches for lr in lrs]


def batch_lr_point(C: float, batch: int, lr: float, rule: ShapeRule = ShapeRule(),
                   tokens_per_param: float = 20.0, branch_fracs: Sequence[float] = ()) -> RunSpec:
    """The prior compute-optimal model at budget C, trained with this batch and peak LR.

    ``branch_fracs``: WSD cooldown branches ending at these fractions of C, so one run also
    gives the (B, lr) point of the same model at the smaller budgets.
    """
    if batch % rule.seq_len:
        raise ValueError(f"batch_lr design: batch {batch} is not a multiple of seq_len={rule.seq_len}")
    shape = rule.shape(prior_optimal_params(C, rule, tokens_per_param))
    spec = _spec(f"C{C:.0e}_B{batch}_lr{lr:.0e}", shape, C, None, batch, lr,
                 tags={"design": "batch_lr", "budget": float(C)})
    for f in sorted(set(float(x) for x in branch_fracs)):
        if not 0 < f < 1:
            raise ValueError(f"design.branch_fracs: {f} is not a fraction in (0, 1)")
        spec.cooldowns.append(float(steps_for_tokens(f * spec.tokens, batch, f"branch at {f:g} C") * batch))
    if spec.cooldowns:
        spec.overrides["train.cooldowns"] = spec.cooldowns
    return spec


def dirichlet_mixtures(domains: Sequence[str], n: int, alpha: float = 1.0, seed: int = 0, decimals: int = 4) -> list[dict[str, float]]:
    """``n`` mixtures drawn from Dirichlet(alpha) over ``domains`` (seeded, rounded, summing to 1)."""
    if len(domains) < 2:
        raise ValueError("mixture design: need at least two domains")
    rng = np.random.default_rng(seed)
    out = []
    for p in rng.dirichlet(np.full(len(domains), alpha), size=n):
        r = np.round(p, decimals)
        r[np.argmax(r)] += round(1.0 - r.sum(), decimals)  # exact sum after rounding
        out.append({d: float(x) for d, x in zip(domains, r)})
    return out


AXIAL_HEAVY = 0.45  # an axial point's share of its own domain
AXIAL_LIGHT = 0.02  # a starved point's share of its own domain


def axial_mixtures(domains: Sequence[str], heavy: float = AXIAL_HEAVY, light: float = AXIAL_LIGHT,
                   decimals: int = 4) -> list[dict[str, float]]:
    """The axial design of mixture experiments (Cornell, *Experiments with Mixtures*): the centroid,
    then each domain raised to ``heavy`` and each lowered to ``light``, the others sharing the rest
    equally; ``1 + 2M`` mixtures for M domains.

    Unlike random draws it is the same for every seed, so a study rerun with another seed changes
    the training noise only, and each domain's effect is measured from both sides of the centroid.
    """
    M = len(domains)
    if M < 2:
        raise ValueError("mixture design: need at least two domains")
    if not (1.0 / M < heavy < 1.0 and 0.0 < light < 1.0 / M):
        raise ValueError(f"axial mixtures: need light < 1/{M} < heavy < 1, got light={light}, heavy={heavy}")

    def point(i: int, share: float) -> dict[str, float]:
        rest = round((1.0 - share) / (M - 1), decimals)
        r = np.full(M, rest)
        r[i] = round(1.0 - rest * (M - 1), decimals)
        return {d: float(x) for d, x in zip(domains, r)}

    centroid = {d: round(1.0 / M, decimals) for d in domains}
    centroid[domains[0]] = round(1.0 - sum(list(centroid.values())[1:]), decimals)
    return [centroid] + [point(i, heavy) for i in range(M)] + [point(i, light) for i in range(M)]


def design_mixtures(domains: Sequence[str], n: int, how: str = "dirichlet", alpha: float = 1.0,
                    seed: int = 0) -> list[dict[str, float]]:
    """The ``n`` mixtures of a mixture design: ``dirichlet`` draws (seeded), or the ``axial`` design
    (:func:`axial_mixtures`) followed, when ``n`` is larger, by Dirichlet draws."""
    if how == "dirichlet":
        return dirichlet_mixtures(domains, n, alpha, seed)
    if how != "axial":
        raise ValueError(f"design.mixtures: {how!r} is not one of dirichlet, axial")
    axial = axial_mixtures(domains)
    if n < len(axial):
        raise ValueError(f"design.n_mixtures: the axial design over {len(domains)} domains has {len(axial)} "
                         f"mixtures; set design.n_mixtures >= {len(axial)}")
    return axial + dirichlet_mixtures(domains, n - len(axial), alpha, seed)


def mixtures(domains: Sequence[str], n_mixtures: int, sizes: Sequence[float], tokens_per_param: float = 20.0,
             batch_tokens: int = 4096, lr: float = 3e-3, alpha: float = 1.0, seed: int = 0,
             rule: ShapeRule = ShapeRule(), how: str = "dirichlet") -> list[RunSpec]:
    """The mixtures of :func:`design_mixtures`, each trained at every size with D = tokens_per_param * N."""
    mixes = design_mixtures(domains, n_mixtures, how, alpha, seed)
    return [mixture_point(mix, n, tokens_per_param, batch_tokens, lr, rule, i, j)
            for i, n in enumerate(sizes) for j, mix in enumerate(mixes)]


def mixture_point(mix: dict[str, float], n: float, tokens_per_param: float = 20.0, batch_tokens: int = 4096,
                  lr: float = 3e-3, rule: ShapeRule = ShapeRule(), i: int = 0, j: int = 0) -> RunSpec:
    """Target size ``n`` trained on mixture ``mix`` for ``tokens_per_param * N`` tokens."""
    shape = rule.shape(n)
    d = tokens_per_param * counts(shape)["params"]
    return _spec(f"N{i}_m{j}", shape, None, d, batch_tokens, lr, mixture=mix,
                 tags={"design": "mixture", "mixture_index": j, "size_index": i})


def plan_table(specs: Sequence[RunSpec], flops_per_s: float | None = None, compile_s: float = 0.0) -> str:
    """The dry-run table: one line per run, the total compute and an estimated wall time (training at
    ``flops_per_s``, plus ``compile_s`` seconds of compiling)."""
    lines = [f"{'run':<22s} {'N':>11s} {'D':>10s} {'C':>10s} {'B':>6s} {'lr':>8s}  mixture"]
    for s in specs:
        mix = s.mixture if isinstance(s.mixture, str) else ", ".join(f"{k}={v:.2f}" for k, v in s.mixture.items() if v > 0)
        lines.append(f"{s.name:<22s} {s.params:>11,} {s.tokens:>10.3g} {s.flops:>10.3g} {s.batch_tokens:>6d} {s.lr:>8.2g}  {mix}")
    total = sum(s.flops for s in specs)
    tail = f"{len(specs)} runs, total C = {total:.3g} FLOPs"
    if flops_per_s:
        tail += (f", about {total / flops_per_s / 60:.1f} min of training at {flops_per_s / 1e9:.1f} GFLOP/s "
                 f"(probed; start-up and evaluation come on top)")
    if compile_s:
        tail += f", plus about {compile_s / 60:.1f} min compiling"
    lines.append(tail)
    return "\n".join(lines)
