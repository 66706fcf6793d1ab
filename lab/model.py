"""The proxy model family: a LLaMA-style decoder-only transformer.

Pre-norm blocks with RMSNorm (Zhang & Sennrich 2019, arXiv:1910.07467), rotary position
embeddings (Su et al. 2021, arXiv:2104.09864), grouped-query attention (Ainslie et al. 2023,
arXiv:2305.13245) through causal ``scaled_dot_product_attention``, and a SwiGLU MLP (Shazeer 2020,
arXiv:2002.05202); no biases; tied or untied embeddings. The shape comes from
:func:`lab.counting.resolve_shape`; :meth:`Transformer.param_groups` counts the real module by the
same groups as :func:`lab.counting.param_groups`, and the tests check they agree.

The model knows no training loop and no corpus. q/k/v and gate/up are each stored as one weight
(one optimizer tensor, one checkpoint entry) but applied as separate matmuls on its row blocks:
one fused matmul leaves gate/up and q/k/v as strided column slices of its output, and elementwise
ops on strided slices (SiLU, RoPE, and the zero-filled slice gradients in backward) ran up to 2.3x
slower than on contiguous tensors. Measured with 1-thread steps interleaved (``lab.bench`` shapes):
separate matmuls were 1.11x faster at 107k params, 1.04x at 603k, 1.10x at 1.8M, 1.06x at 7.4M,
and within noise (0.97x) at 25M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab.config import ModelConfig
from lab.counting import Shape

_SDPA_HAS_GQA = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")


def _kernel_usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    if q.device.type != "cpu":
        return False
    from lab.kernels.attention import usable

    return usable(q, k, v)
def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables of shape (seq_len, 1, 2, head_dim/2): ``[cos, cos]`` and ``[-sin, sin]``.

    With a head viewed as two halves (x1, x2), rotate-half RoPE is
    ``(x1 cos - x2 sin, x2 cos + x1 sin) = x * [cos, cos] + swap(x) * [-sin, sin]``: three
    contiguous elementwise kernels instead of strided half-tensor ops and a concatenation.
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    cos, sin = angles.cos().float()[:, None, :], angles.sin().float()[:, None, :]
    return torch.stack((cos, cos), dim=-2), torch.stack((-sin, sin), dim=-2)


def register_rope(module: nn.Module, shape: Shape, cfg: ModelConfig) -> None:
    """The module's RoPE tables as non-persistent buffers (they follow ``.to(device)``)."""
    cos2, sin2 = rope_tables(shape.seq_len, shape.head_dim, cfg.rope_theta)
    module.register_buffer("rope_cos", cos2, persistent=False)
    module.register_buffer("rope_sin", sin2, persistent=False)
    module.register_buffer("rope_cos_half", cos2[:, 0, 0, :].contiguous(), persistent=False)
    module.register_buffer("rope_sin_half", sin2[:, 0, 1, :].contiguous(), persistent=False)


def rope_for(module: nn.Module, T: int) -> Rope:
    """The :class:`Rope` of a module's first T positions."""
    return Rope(module.rope_cos[:T], module.rope_sin[:T], module.rope_cos_half[:T], module.rope_sin_half[:T])


def apply_rope(x: torch.Tensor, cos2: torch.Tensor, sin2: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_i, x_{i+hd/2}) of ``x`` (B, T, H, hd) by position-dependent angles."""
    h = x.unflatten(-1, (2, x.shape[-1] // 2))
    return (h * cos2 + h.flip(-2) * sin2).flatten(-2)


@dataclass(frozen=True)
class Rope:
    """RoPE tables for T positions: ``cos2``, ``sin2`` (T, 1, 2, hd/2) for :func:`apply_rope`, and
    ``cos``, ``sin`` (T, hd/2) contiguous for the attention kernel, which rotates q and k itself."""

    cos2: torch.Tensor
    sin2: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor


def rotary_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Causal attention of q (B, T, H, hd) over k, v (B, T, H_kv, hd), q and k rotated by ``rope``;
    returns (B, T, H, hd). H a multiple of H_kv (GQA).

    On CPU in fp32 the lab's own kernel (:mod:`lab.kernels.attention`, RoPE applied inside it: 1.3-1.7x
    torch's flash kernel at head widths 16-64, forward and backward); elsewhere :func:`apply_rope` and
    torch's ``scaled_dot_product_attention``.
    """
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if _kernel_usable(qt, kt, vt):
        from lab.kernels.attention import causal_attention

        return causal_attention(qt, kt, vt, rope=(rope.cos, rope.sin)).transpose(1, 2)
    q, k = apply_rope(q, rope.cos2, rope.sin2).transpose(1, 2), apply_rope(k, rope.cos2, rope.sin2).transpose(1, 2)
    return attention(q, k, vt).transpose(1, 2)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of q (B, H, T, hd) over k, v (B, H_kv, T, hd) with torch's
    ``scaled_dot_product_attention``; H a multiple of H_kv (GQA)."""
    H, K = q.shape[1], k.shape[1]
    if K == H:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if _SDPA_HAS_GQA:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    rep = H // K  # older torch: expand kv heads explicitly
    return F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), is_causal=True)


_FUSED_RMS = hasattr(torch.ops.aten, "_fused_rms_norm")  # the forward kernel (its backward is CUDA-only)


def _normalize(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / rms(x), 1 / rms(x)) over the last dimension."""
    if _FUSED_RMS:
        return torch.ops.aten._fused_rms_norm(x, [x.shape[-1]], None, eps)
    rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return x * rstd, rstd


class _RMSNormFn(torch.autograd.Function):
    """RMSNorm with one backward node: ``y = (x / rms(x)) * w``.

    Autograd's own decomposition of ``F.rms_norm`` sends x three gradient terms (through its square,
    its scaling and the residual stream), summed in an order that depends on the graph around it, so
    the same rows gave different bits in a solo and a packed model. Here x gets one term, computed
    row by row, and ``w``'s gradient is summed over the rows that share it (all of them for a (d,)
    gain, each member's for a packed (K, 1, d) one), so both orders agree bit for bit.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        xhat, rstd = _normalize(x, eps)
        ctx.save_for_backward(x, rstd, w)
        return xhat * w

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, rstd, w = ctx.saved_tensors
        xhat, gw = x * rstd, g * w
        dx = rstd * (gw - xhat * (gw * xhat).mean(-1, keepdim=True))
        dw = (g * xhat).sum_to_size(w.shape) if ctx.needs_input_grad[1] else None
        return dx, dw, None


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm (Zhang & Sennrich 2019) of the last dimension of x with gain w (d,)."""
    return grouped_rms_norm(x.reshape(1, -1, x.shape[-1]), w.view(1, -1), eps).view(x.shape)


def grouped_rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of x (K, M, d), group k's rows with its own gain w[k] (w: (K, d)): a pack's members.

    On CPU in fp32 the lab's one-pass kernels (:mod:`lab.kernels.rowops`); elsewhere :class:`_RMSNormFn`.
    """
    if _rowops_usable(x, w):
        from lab.kernels.rowops import rms_norm as kernel

        return kernel(x, w, eps)
    return _RMSNormFn.apply(x, w[:, None, :], eps)


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SwiGLU's gate: silu(a) * b (Shazeer 2020, arXiv:2002.05202); one-pass kernels on CPU in fp32."""
    if _rowops_usable(a, b):
        from lab.kernels.rowops import swiglu as kernel

        return kernel(a, b)
    return F.silu(a) * b


def grouped_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats/token) of each group: logits (K, N, V), targets (K, N) -> (K,).

    On CPU in fp32 one pass forward and one backward (:mod:`lab.kernels.rowops`); elsewhere each
    group's own ``F.cross_entropy`` (in fp32)."""
    if _rowops_usable(logits, targets):
        from lab.kernels.rowops import cross_entropy as kernel

        return kernel(logits, targets)
    return torch.stack([F.cross_entropy(logits[k].float(), targets[k]) for k in range(logits.shape[0])])


def _rowops_usable(*tensors: torch.Tensor) -> bool:
    if tensors[0].device.type != "cpu":
        return False
    from lab.kernels.rowops import usable

    return usable(*tensors)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, shape: Shape):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = shape.num_heads, shape.num_kv_heads, shape.head_dim
        self.qkv = nn.Linear(shape.d_model, (self.n_heads + 2 * self.n_kv) * self.hd, bias=False)
        self.proj = nn.Linear(self.n_heads * self.hd, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:
        B, T, _ = x.shape
        H, K, hd = self.n_heads, self.n_kv, self.hd
        wq, wk, wv = self.qkv.weight.split((H * hd, K * hd, K * hd))  # contiguous row blocks
        q = F.linear(x, wq).view(B, T, H, hd)
        k = F.linear(x, wk).view(B, T, K, hd)
        v = F.linear(x, wv).view(B, T, K, hd)
        return self.proj(rotary_attention(q, k, v, rope).reshape(B, T, H * hd))


class SwiGLU(nn.Module):
    def __init__(self, shape: Shape):
        super().__init__()
        self.d_ff = shape.d_ff
        self.gate_up = nn.Linear(shape.d_model, 2 * shape.d_ff, bias=False)
        self.down = nn.Linear(shape.d_ff, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_gate, w_up = self.gate_up.weight.split(self.d_ff)
        return self.down(swiglu(F.linear(x, w_gate), F.linear(x, w_up)))


class Block(nn.Module):
    def __init__(self, shape: Shape, eps: float):
        super().__init__()
        self.attn_norm = RMSNorm(shape.d_model, eps)
        self.attn = Attention(shape)
        self.mlp_norm = RMSNorm(shape.d_model, eps)
        self.mlp = SwiGLU(shape)

    def forward(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rope)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """Decoder-only LM. ``forward(idx)`` returns logits; ``forward(idx, targets)`` the mean loss."""

    def __init__(self, shape: Shape, cfg: ModelConfig | None = None):
        super().__init__()
        cfg = cfg or ModelConfig()
        self.shape = shape
        self.tok_emb = nn.Embedding(shape.vocab_size, shape.d_model)
        self.blocks = nn.ModuleList(Block(shape, cfg.norm_eps) for _ in range(shape.num_layers))
        self.norm = RMSNorm(shape.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        if shape.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        register_rope(self, shape, cfg)
        self._init_weights(cfg.init_std)

    def _init_weights(self, std: float) -> None:
        # GPT-2 style: N(0, std) everywhere, residual-branch outputs scaled by 1/sqrt(2 L) so the
        # residual stream's variance does not grow with depth (Radford et al. 2019).
        resid_std = std / math.sqrt(2 * self.shape.num_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                continue
            nn.init.normal_(p, mean=0.0, std=resid_std if name.endswith(("proj.weight", "down.weight")) else std)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        rope = rope_for(self, idx.shape[1])
        x = self.tok_emb(idx)
        for block in self.blocks:
            x = block(x, rope)
        logits = self.lm_head(self.norm(x))
        if targets is None:
            return logits
        return grouped_cross_entropy(logits.view(1, -1, logits.shape[-1]), targets.reshape(1, -1))[0]

    def param_groups(self) -> dict[str, int]:
        """Real parameter counts by the groups of :func:`lab.counting.param_groups`."""
        groups = {"embedding": 0, "lm_head": 0, "attention": 0, "mlp": 0, "norm": 0}
        for name, p in self.named_parameters():  # named_parameters yields a tied weight once
            if name.startswith("tok_emb."):
                groups["embedding"] += p.numel()
            elif name.startswith("lm_head."):
                groups["lm_head"] += p.numel()
            elif ".attn." in name:
                groups["attention"] += p.numel()
            elif ".mlp." in name:
                groups["mlp"] += p.numel()
            elif "norm" in name:
                groups["norm"] += p.numel()
            else:  # pragma: no cover - a new parameter must be assigned a group
                raise AssertionError(f"parameter {name} belongs to no group")
        return groups

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay matrices (and embeddings), not norm gains."""
        decay, no_decay = [], []
        for _, p in self.named_parameters():
            (decay if p.dim() >= 2 else no_decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
