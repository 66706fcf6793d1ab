"""K proxies of one shape as one module: every parameter of :class:`lab.model.Transformer` stacked on a
leading *member* axis.

A batch x LR grid, a set of seeds or a set of mixtures at one size trains the same shape many times.
Trained one per process, each run's matmuls are too small to fill a core and every run pays its own
process start, data load and (when compiled) compilation. Here member k's weights are slice ``[k]``
of each stacked parameter, the linear layers are batched matmuls over members (``torch.matmul`` on
``(K, tokens, d)`` by ``(K, d, out)``), and norms, RoPE, SwiGLU and attention run on all members'
tokens at once. Member k computes bit for bit what ``Transformer`` computes with member k's
weights, forward and backward (measured on CPU in fp32: batched and single matmuls, RMSNorm with a
separate gain, attention over a larger batch and the embedding's backward give identical bits; the
loss is each member's own ``cross_entropy`` call), so a packed run is the same experiment as a solo one.

:meth:`PackedTransformer.member_view` is member k as a solo ``Transformer`` whose parameters are views
of the pack's slices: its ``state_dict`` is member k's checkpoint under the solo keys, its
``load_state_dict`` writes into the pack, and the solo trainer's own optimizer and gradient clipping
run on it unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab.config import ModelConfig
from lab.counting import Shape
from lab.model import (
    Rope,
    Transformer,
    grouped_cross_entropy,
    grouped_rms_norm,
    register_rope,
    rope_for,
    rotary_attention,
    swiglu,
)

# packed parameter name -> the solo model's state_dict key ("{i}" is the block index)
_BLOCK = {
    "attn_norm": "blocks.{i}.attn_norm.weight", "qkv": "blocks.{i}.attn.qkv.weight",
    "proj": "blocks.{i}.attn.proj.weight", "mlp_norm": "blocks.{i}.mlp_norm.weight",
    "gate_up": "blocks.{i}.mlp.gate_up.weight", "down": "blocks.{i}.mlp.down.weight",
}
_TOP = {"tok_emb": "tok_emb.weight", "norm": "norm.weight", "lm_head": "lm_head.weight"}


def _stacked(members: int, *shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(members, *shape))


def _linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per-member ``F.linear``: x (K, M, in), w (K, out, in) -> (K, M, out)."""
    return torch.matmul(x, w.transpose(-1, -2))


def _rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-member RMSNorm: x (K, M, d), gains w (K, d)."""
    return grouped_rms_norm(x, w, eps)


class PackedBlock(nn.Module):
    """One pre-norm block of K members (see :class:`lab.model.Block`)."""

    def __init__(self, shape: Shape, members: int, eps: float):
        super().__init__()
        s, K = shape, members
        self.eps, self.n_heads, self.n_kv, self.hd, self.d_ff = eps, s.num_heads, s.num_kv_heads, s.head_dim, s.d_ff
        self.attn_norm = _stacked(K, s.d_model)
        self.qkv = _stacked(K, (s.num_heads + 2 * s.num_kv_heads) * s.head_dim, s.d_model)
        self.proj = _stacked(K, s.d_model, s.num_heads * s.head_dim)
        self.mlp_norm = _stacked(K, s.d_model)
        self.gate_up = _stacked(K, 2 * s.d_ff, s.d_model)
        self.down = _stacked(K, s.d_model, s.d_ff)

    def forward(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:
        K, B, T, _ = x.shape
        H, G, hd = self.n_heads, self.n_kv, self.hd
        h = _rms_norm(x.view(K, B * T, -1), self.attn_norm, self.eps)
        wq, wk, wv = self.qkv.split((H * hd, G * hd, G * hd), dim=1)
        q = _linear(h, wq).view(K * B, T, H, hd)
        k = _linear(h, wk).view(K * B, T, G, hd)
        v = _linear(h, wv).view(K * B, T, G, hd)
        y = rotary_attention(q, k, v, rope).reshape(K, B * T, H * hd)
        x = x + _linear(y, self.proj).view(K, B, T, -1)
        h = _rms_norm(x.view(K, B * T, -1), self.mlp_norm, self.eps)
        w_gate, w_up = self.gate_up.split(self.d_ff, dim=1)
        return x + _linear(swiglu(_linear(h, w_gate), _linear(h, w_up)), self.down).view(K, B, T, -1)


class PackedTransformer(nn.Module):
    """K members of :class:`lab.model.Transformer` with one shape.

    ``forward(idx)`` with ``idx`` (K, B, T) returns logits (K, B, T, V); ``forward(idx, targets)``
    each member's mean cross-entropy, a (K,) tensor (sum it to backpropagate: members share nothing).
    """

    def __init__(self, shape: Shape, members: int, cfg: ModelConfig | None = None):
        super().__init__()
        cfg = cfg or ModelConfig()
        if members < 1:
            raise ValueError(f"a pack needs at least one member, got {members}")
        self.shape, self.cfg, self.members = shape, cfg, members
        s = shape
        self.tok_emb = _stacked(members, s.vocab_size, s.d_model)
        self.blocks = nn.ModuleList(PackedBlock(s, members, cfg.norm_eps) for _ in range(s.num_layers))
        self.norm = _stacked(members, s.d_model)
        self.lm_head = self.tok_emb if s.tie_embeddings else _stacked(members, s.vocab_size, s.d_model)
        register_rope(self, s, cfg)
        self.register_buffer("vocab_offsets", torch.arange(members)[:, None, None] * s.vocab_size, persistent=False)

    # ---- members in and out --------------------------------------------------------------------

    @classmethod
    def from_seeds(cls, shape: Shape, seeds: list[int], cfg: ModelConfig | None = None) -> "PackedTransformer":
        """Member k initialised exactly as ``torch.manual_seed(seeds[k]); Transformer(shape, cfg)`` is."""
        pack = cls(shape, len(seeds), cfg)
        for k, seed in enumerate(seeds):
            torch.manual_seed(seed)
            pack.load_member(k, Transformer(shape, cfg).state_dict())
        return pack

    def solo_names(self) -> dict[str, str]:
        """Packed parameter name -> the solo model's state_dict key (tied weights: one entry)."""
        out = {}
        for name, _ in self.named_parameters():
            if name.startswith("blocks."):
                _, i, leaf = name.split(".")
                out[name] = _BLOCK[leaf].format(i=i)
            else:
                out[name] = _TOP[name]
        return out

    def member_view(self, k: int) -> Transformer:
        """Member k as a solo :class:`Transformer` whose parameters share storage with slice k of the
        pack's (no copy). Gradients are not shared: set each view parameter's ``.grad`` to the slice of
        the pack's gradient before stepping it (:func:`lab.pack.train.Group.step` does)."""
        with torch.device("meta"):
            view = Transformer(self.shape, self.cfg)
        by_solo = {solo: packed for packed, solo in self.solo_names().items()}
        params = dict(self.named_parameters())
        for solo_key, _ in list(view.named_parameters()):
            owner, leaf = solo_key.rsplit(".", 1)
            setattr(view.get_submodule(owner), leaf, nn.Parameter(params[by_solo[solo_key]].data[k]))
        if self.shape.tie_embeddings:
            view.lm_head.weight = view.tok_emb.weight
        return view

    def load_member(self, k: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Set member k's weights from a ``Transformer`` state dict (copied into the pack)."""
        self.member_view(k).load_state_dict(state_dict)

    @torch.no_grad()
    def select(self, members: list[int]) -> "PackedTransformer":
        """A new pack holding copies of the listed members, in that order."""
        idx = torch.tensor(members, dtype=torch.long, device=self.tok_emb.device)
        out = PackedTransformer(self.shape, len(members), self.cfg).to(self.tok_emb.device)
        src = dict(self.named_parameters())
        for name, p in out.named_parameters():
            p.copy_(src[name].index_select(0, idx))
        return out

    # ---- the function ----------------------------------------------------------------------------

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        K, B, T = idx.shape
        s = self.shape
        rope = rope_for(self, T)
        x = F.embedding(idx + self.vocab_offsets[:K], self.tok_emb.view(-1, s.d_model))
        for block in self.blocks:
            x = block(x, rope)
        h = _rms_norm(x.view(K, B * T, -1), self.norm, self.cfg.norm_eps)
        logits = _linear(h, self.lm_head)
        if targets is None:
            return logits.view(K, B, T, -1)
        return grouped_cross_entropy(logits.view(K, B * T, s.vocab_size), targets.reshape(K, B * T))
