"""Domain mixtures: validated proportions, a deterministic batch sampler, fixed validation sets.

A mixture r assigns each domain j a share r_j >= 0 with sum_j r_j = 1 (column ``mix_<domain>`` in
the tables). Each training batch of n sequences is split across domains by *systematic sampling*
(one uniform offset, n evenly spaced points through the cumulative shares), so every batch holds
``floor(n r_j)`` or ``ceil(n r_j)`` sequences of domain j: proportions are honoured per batch,
not just on average. Sequence starts are uniform over the domain's training shard.

The batch for step s is a pure function of (seed, s), so a resumed run draws exactly the batches
an unbroken run would, with no sampler state to checkpoint.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

from lab.data.shards import TokenCorpus

MIX_TOL = 1e-6


def resolve_mixture(spec: Any, domains: list[str], natural: Mapping[str, int] | None = None, field: str = "data.mixture") -> dict[str, float]:
    """Turn a mixture spec into {domain: share} over ``domains`` (validated).

    ``spec`` is "natural" (shares by training tokens, given in ``natural``), "uniform", or a
    mapping {domain: share}; domains left out get 0. Raises ValueError naming ``field`` when a
    domain is unknown, a share is negative or not finite, or the shares do not sum to 1.
    """
    if isinstance(spec, str):
        if spec == "uniform":
            return {d: 1.0 / len(domains) for d in domains}
        if spec == "natural":
            if natural is None:
                raise ValueError(f"{field}: 'natural' needs the domains' token counts")
            total = float(sum(natural[d] for d in domains))
            return {d: natural[d] / total for d in domains}
        raise ValueError(f"{field}: {spec!r} is not 'natural', 'uniform' or a mapping {{domain: share}} over {domains}")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{field}: expected 'natural', 'uniform' or a mapping {{domain: share}}, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(domains))
    if unknown:
        raise ValueError(f"{field}: unknown domain(s) {unknown}; known domains: {domains}")
    mix = {}
    for d in domains:
        v = spec.get(d, 0.0)
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{field}.{d}: share must be a number, got {v!r}") from None
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{field}.{d}: share must be a finite number >= 0, got {v}")
        mix[d] = v
    total = sum(mix.values())
    if abs(total - 1.0) > MIX_TOL:
        raise ValueError(f"{field}: shares must sum to 1, got {total:.6g} ({dict(spec)})")
    return {d: v / total for d, v in mix.items()}


def systematic_counts(shares: np.ndarray, n: int, u: float) -> np.ndarray:
    """Split n draws across categories by systematic sampling with offset u in [0, 1)."""
    edges = np.concatenate([[0.0], np.cumsum(shares)])
    edges[-1] = 1.0
    points = (u + np.arange(n)) / n
    return np.histogram(points, bins=edges)[0]


class MixtureSampler:
    """Training batches drawn from a :class:`TokenCorpus` by fixed domain proportions."""

    def __init__(self, corpus: TokenCorpus, mixture: Mapping[str, float], seq_len: int, seed: int):
        self.corpus, self.seq_len, self.seed = corpus, seq_len, seed
        self.domains = [d for d in corpus.names if mixture.get(d, 0.0) > 0]
        self.shares = np.asarray([mixture[d] for d in self.domains], dtype=np.float64)
        self.shares /= self.shares.sum()
        for d in self.domains:
            n = len(corpus.domains[d].train)
            if n < seq_len + 2:
                raise ValueError(
                    f"data.mixture: domain {d!r} has only {n} training tokens, fewer than one sequence "
                    f"(data.seq_len={seq_len}); drop it from the mixture or lower data.seq_len"
                )

    def batch(self, step: int, n_seqs: int, micro: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Inputs, targets (n_seqs, seq_len) int64 and each row's domain index, for (step, micro)."""
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, step, micro])))
        counts = systematic_counts(self.shares, n_seqs, rng.random())
        dom = rng.permutation(np.repeat(np.arange(len(self.domains)), counts))
        T = self.seq_len
        rows = np.empty((n_seqs, T + 1), dtype=np.int64)
        for i, j in enumerate(dom):
            data = self.corpus.domains[self.domains[j]].train
            start = int(rng.integers(0, len(data) - T - 1))
            rows[i] = data[start : start + T + 1]
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:], dom


def validation_set(corpus: TokenCorpus, domain: str, seq_len: int, max_tokens: int) -> torch.Tensor:
    """Fixed held-out windows (n, seq_len + 1) from the start of a domain's validation shard."""
    data = corpus.domains[domain].val
    n = min(max_tokens, len(data) - 1) // seq_len
    if n < 1:
        raise ValueError(
            f"data.corpus: domain {domain!r} has {len(data)} validation tokens, fewer than one sequence "
            f"of data.seq_len={seq_len}"
        )
    idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return torch.from_numpy(np.asarray(data[idx], dtype=np.int64))
