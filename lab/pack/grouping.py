"""Which runs can train together, and in what groups: pure planning, no torch.

Two runs can share a pack when they train the same model (shape and every model setting) on the same
token data (corpus, tokenizer, sequence length, validation windows) on the same hardware settings. What
may differ per member is everything a sweep varies: peak LR and schedule, batch, budget, seed (init and
data order), mixture and validation weights, AdamW settings, cooldown branches, cadences.
:func:`pack_key` says which; :func:`group_runs` splits the runs sharing a key into packs no larger than
a memory bound, and into at least as many packs as there are workers when it can, so every core trains.

Runs that measure the gradient noise scale (``train.gns``: per-micro-batch gradients of one model) and
recipe runs (full size) train alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Hashable, Sequence

from lab.config import RunConfig
from lab.counting import Shape

MAX_MEMBERS = 16  # beyond this a pack gains little and a single failure costs more
SAFETY = 2.0  # activation estimate x this: autograd's temporaries, the allocator's slack


# What the members of one pack share (every model setting is shared too); everything else may differ.
SHARED_FIELDS = ("data.corpus", "data.tokenizer", "data.bpe_vocab_size", "data.seq_len", "data.val_tokens",
                 "data.root", "train.device", "train.dtype", "train.compile", "train.threads")


def _shared(cfg: RunConfig) -> list[tuple[str, Any]]:
    model = [(f"model.{k}", v) for k, v in sorted(asdict(cfg.model).items())]
    return model + [(f, getattr(getattr(cfg, f.split(".")[0]), f.split(".")[1])) for f in SHARED_FIELDS]


def pack_key(cfg: RunConfig, shape: Shape) -> Hashable | None:
    """What members of one pack must share (the resolved shape, every model setting and
    :data:`SHARED_FIELDS`), or None when this run trains alone (``train.gns``, a recipe run)."""
    if cfg.train.gns or cfg.recipe:
        return None
    return (tuple(sorted(asdict(shape).items())), tuple((k, str(v)) for k, v in _shared(cfg)))


def key_difference(a: RunConfig, b: RunConfig) -> str | None:
    """The first shared field on which two runs differ, as ``field: a vs b`` (None: none)."""
    for (k, va), (_, vb) in zip(_shared(a), _shared(b)):
        if str(va) != str(vb):
            return f"{k} {va!r} vs {vb!r}"
    return None


def bytes_per_token(shape: Shape) -> float:
    """Training memory per token of one member: the activations autograd keeps for backward, per
    layer about 8 d_model + 4 d_ff floats (inputs, norms, q/k/v, attention output, gate/up/SwiGLU),
    and 3 V floats for the logits, their softmax and gradient; x :data:`SAFETY`."""
    s = shape
    floats = s.num_layers * (8 * s.d_model + 4 * s.d_ff) + 3 * s.vocab_size + 4 * s.d_model
    return 4.0 * floats * SAFETY


def state_bytes(params_total: int) -> float:
    """Weights, gradients and two AdamW moments of one member, fp32."""
    return 16.0 * params_total


def pack_micro(micros: Sequence[int], members: int, shape: Shape, budget_bytes: float) -> int:
    """The sequences per member per forward: the largest divisor of every member's micro-batch whose
    activations for ``members`` members fit ``budget_bytes`` (at least 1)."""
    g = 0
    for m in micros:
        g = math.gcd(g, int(m))
    per_seq = bytes_per_token(shape) * shape.seq_len * members
    for m in sorted((x for x in range(1, g + 1) if g % x == 0), reverse=True):
        if m * per_seq <= budget_bytes:
            return m
    return 1


def max_members(shape: Shape, params_total: int, budget_bytes: float, micro: int = 1) -> int:
    """How many members fit ``budget_bytes`` at ``micro`` sequences each (at least 1, at most
    :data:`MAX_MEMBERS`)."""
    per = bytes_per_token(shape) * shape.seq_len * micro + state_bytes(params_total)
    return max(1, min(MAX_MEMBERS, int(budget_bytes // per)))


@dataclass
class Item:
    """One run to place: its id (any label), pack key (None: alone), compute and member bound."""

    id: Any
    key: Hashable | None
    flops: float
    limit: int  # most members a pack of this key may have (memory)


BALANCE = 1.25  # packs are split until the worst-case finish is within this factor of a perfect split


def group_runs(items: Sequence[Item], workers: int) -> list[list[Any]]:
    """Packs (lists of ids) covering ``items``: runs sharing a key together, each pack within its
    members' ``limit``; then the largest pack is halved until there are at least ``workers`` packs
    and, even taken in the worst order (smallest first), they finish within :data:`BALANCE` of the
    compute split evenly over the workers, or no pack can be split. Workers take packs in no set
    order: 39 runs of 3 sizes in 3 packs on 2 workers ran 1.5x their even share before this rule.
    Runs with key None are packs of one. Deterministic."""
    by_key: dict[Hashable, list[Item]] = {}
    packs: list[list[Item]] = []
    for it in items:
        if it.key is None:
            packs.append([it])
        else:
            by_key.setdefault(it.key, []).append(it)
    for group in by_key.values():
        limit = max(1, min(i.limit for i in group))
        n = math.ceil(len(group) / limit)
        packs += [group[i::n] for i in range(n)]  # round-robin: balanced sizes, mixed budgets
    work = lambda p: sum(x.flops for x in p)  # noqa: E731
    even = sum(work(p) for p in packs) / max(1, workers)
    while True:
        big = max(range(len(packs)), key=lambda i: (len(packs[i]) > 1, work(packs[i])), default=None)
        if big is None or len(packs[big]) < 2:
            break
        before = _worst_finish([work(p) for p in packs], workers)
        if len(packs) >= workers and before <= BALANCE * even:
            break
        split = packs[:big] + packs[big + 1:] + [packs[big][0::2], packs[big][1::2]]
        if len(packs) >= workers and _worst_finish([work(p) for p in split], workers) >= before:
            break  # an unsplittable pack sets the finish: smaller packs would only cost amortisation
        packs = split
    packs.sort(key=lambda p: -work(p))
    return [[x.id for x in p] for p in packs]


def _worst_finish(works: Sequence[float], workers: int) -> float:
    """When the last of ``works`` finishes if each free worker takes the next, smallest first."""
    free = [0.0] * max(1, workers)
    for w in sorted(works):
        i = free.index(min(free))
        free[i] += w
    return max(free)
