"""A straightforward LLaMA-style prototype: the baseline the benchmark measures the trainer against.

Issue #2 set the trainer's MFU targets from "a plain LLaMA-style proxy" without stating its FLOP
convention, so a number alone cannot say whether the lab is faster. This module is that plain
proxy, written the way a first prototype usually is (nanoGPT/LLaMA reference style): separate
q/k/v and w1/w3 projections, rotate-half RoPE with ``torch.cat``, RMSNorm from plain tensor ops,
``repeat_interleave`` for grouped-query attention, causal ``scaled_dot_product_attention``,
``foreach`` AdamW. It has exactly the parameters of :class:`lab.model.Transformer` for the same
:class:`~lab.counting.Shape`, so both do the same FLOPs per token and ``lab.bench`` reports the
trainer's speed-up over it, measured in the same run on the same cores.

It is a benchmark baseline only: nothing trains with it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab.counting import Shape


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class _RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class _Block(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.h, self.kv, self.hd = s.num_heads, s.num_kv_heads, s.head_dim
        self.n1, self.n2 = _RMSNorm(s.d_model), _RMSNorm(s.d_model)
        self.wq = nn.Linear(s.d_model, self.h * self.hd, bias=False)
        self.wk = nn.Linear(s.d_model, self.kv * self.hd, bias=False)
        self.wv = nn.Linear(s.d_model, self.kv * self.hd, bias=False)
        self.wo = nn.Linear(self.h * self.hd, s.d_model, bias=False)
        self.w1 = nn.Linear(s.d_model, s.d_ff, bias=False)
        self.w3 = nn.Linear(s.d_model, s.d_ff, bias=False)
        self.w2 = nn.Linear(s.d_ff, s.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        a = self.n1(x)
        q = self.wq(a).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.wk(a).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.wv(a).view(B, T, self.kv, self.hd).transpose(1, 2)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        if self.kv != self.h:
            k, v = k.repeat_interleave(self.h // self.kv, 1), v.repeat_interleave(self.h // self.kv, 1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.wo(y.transpose(1, 2).reshape(B, T, -1))
        m = self.n2(x)
        return x + self.w2(F.silu(self.w1(m)) * self.w3(m))


class PrototypeLM(nn.Module):
    """The plain proxy; ``forward(idx, targets)`` returns the mean cross-entropy."""

    def __init__(self, shape: Shape, rope_theta: float = 10000.0):
        super().__init__()
        s = shape
        self.tok_emb = nn.Embedding(s.vocab_size, s.d_model)
        self.blocks = nn.ModuleList(_Block(s) for _ in range(s.num_layers))
        self.norm = _RMSNorm(s.d_model)
        self.lm_head = nn.Linear(s.d_model, s.vocab_size, bias=False)
        if s.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        inv = 1.0 / rope_theta ** (torch.arange(0, s.head_dim, 2).float() / s.head_dim)
        ang = torch.outer(torch.arange(s.seq_len).float(), inv)
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.tok_emb(idx)
        for b in self.blocks:
            x = b(x, self.cos[:T], self.sin[:T])
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def prototype_step(
    model: PrototypeLM, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
    dtype: torch.dtype | None = None,
) -> None:
    """One plain training step: forward (under autocast to ``dtype`` if given), backward, clip at
    1, AdamW, zero grads."""
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def prototype_optimizer(model: PrototypeLM) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, foreach=True)
