"""The lab's symbols and the only home of parameter and FLOP arithmetic (pure Python, no torch).

Symbols, used everywhere in the lab (tables, fits, recipes):

========  ===============  =====================================================================
symbol    column           meaning
========  ===============  =====================================================================
N         ``params``       non-embedding parameters: every parameter except the token embedding
                           and the output head (``lm_head``). Norm gains count.
N_total   ``params_total`` every distinct parameter (a tied embedding counted once)
D         ``tokens``       training tokens seen (float64)
C         ``flops``        training FLOPs, forward + backward, in the convention below (float64)
B         ``batch_tokens`` global batch in tokens (``batch_seqs`` when sequences are meant)
L         ``loss_val``     validation loss in nats/token; ``bpb_val`` the same in bits per byte
========  ===============  =====================================================================

FLOP convention (one function: :func:`flops_per_token`). Training = 3 x forward (backward is
twice the forward). The forward pass per token counts

* ``2 * N`` for every matmul inside the blocks (norm gains and elementwise ops are ignored; they
  are included in N only because they are parameters),
* ``2 * d_model * V`` for the output head (the embedding lookup costs nothing),
* ``2 * num_layers * seq_len * d_attn`` for attention scores and the weighted sum: ``Q K^T`` and
  ``A V`` are ``2 * seq_len * d_attn`` multiply-adds each per token over the full context, halved
  by the causal mask (a query attends to ``(seq_len + 1) / 2`` keys on average). This equals
  Kaplan et al. (2020, arXiv:2001.08361, Table 1)'s ``2 n_layer n_ctx d_attn`` forward term.

So ``C = 6 * D * (N + d_model * V + num_layers * seq_len * d_attn)``. The plain ``6 N D`` and the
Chinchilla convention (all parameters, full non-causal attention; Hoffmann et al. 2022,
arXiv:2203.15556, Appendix F) and the PaLM MFU convention (:func:`flops_per_token_palm`) are also
provided, and the trainer logs the parameter groups, so a
table can be converted to another convention; fits always say which one they use.

The *shape rule* (:func:`resolve_shape`) turns one size knob, ``depth``, into a full shape in
which width grows with depth: ``d_model = aspect * depth`` rounded up to a multiple of
``head_dim`` (the nanochat rule, github.com/karpathy/nanochat). Any field given explicitly wins.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

# The shape rule's defaults, defined here once (ModelConfig, the designs and the recipe use them).
ASPECT = 32  # d_model per layer
HEAD_DIM = 32  # the rule's attention head width
DESIGN_HEAD_DIM = 16  # head width of the sweep designs' ladders: proxies as small as d_model = 16
FFN_MULT = 8.0 / 3.0  # SwiGLU hidden width per d_model (keeps the MLP near a 4x GELU MLP's size)
FFN_MULTIPLE_OF = 32  # d_ff is rounded up to a multiple of this


@dataclass(frozen=True)
class Shape:
    """A fully resolved decoder shape: all integers, nothing derived left to do."""

    num_layers: int
    d_model: int
    num_heads: int
    num_kv_heads: int
    d_ff: int
    vocab_size: int
    seq_len: int
    tie_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def d_attn(self) -> int:
        """Width of the attention (query) projection; equals d_model here."""
        return self.num_heads * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _round_up(x: float, multiple: int) -> int:
    return int(math.ceil(x / multiple) * multiple)


def resolve_shape(
    *,
    vocab_size: int,
    seq_len: int,
    depth: int | None = None,
    aspect: int = ASPECT,
    head_dim: int = HEAD_DIM,
    num_layers: int | None = None,
    d_model: int | None = None,
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    kv_ratio: int = 1,
    d_ff: int | None = None,
    ffn_mult: float = FFN_MULT,
    ffn_multiple_of: int = FFN_MULTIPLE_OF,
    tie_embeddings: bool = False,
) -> Shape:
    """Derive a :class:`Shape` from the size knob ``depth`` and any explicit overrides.

    Rule: ``num_layers = depth``; ``d_model = ceil(aspect * depth / head_dim) * head_dim``;
    ``num_heads = d_model / head_dim``; ``num_kv_heads = num_heads / kv_ratio`` (grouped-query
    attention); ``d_ff = ffn_mult * d_model`` rounded up to ``ffn_multiple_of`` (SwiGLU keeps the
    MLP's parameter count near a 4x GELU MLP with 8/3). Raises ``ValueError`` naming the field
    and the allowed values when the shape is not valid.
    """
    positive_int("model.vocab_size", vocab_size)
    positive_int("data.seq_len", seq_len)
    if num_layers is None:
        if depth is None:
            raise ValueError("model.depth: give a positive depth (the size knob) or model.num_layers")
        positive_int("model.depth", depth)
        num_layers = depth
    positive_int("model.num_layers", num_layers)
    if d_model is None:
        positive_int("model.aspect", aspect)
        positive_int("model.head_dim", head_dim)
        d_model = _round_up(aspect * (depth if depth is not None else num_layers), head_dim)
    positive_int("model.d_model", d_model)
    if num_heads is None:
        if d_model % head_dim:
            raise ValueError(
                f"model.head_dim: {head_dim} does not divide model.d_model={d_model}; "
                f"allowed head_dim values are divisors of d_model, e.g. {_divisors(d_model)}"
            )
        num_heads = d_model // head_dim
    positive_int("model.num_heads", num_heads)
    if d_model % num_heads:
        raise ValueError(
            f"model.num_heads: {num_heads} does not divide model.d_model={d_model}; "
            f"allowed values: {_divisors(d_model)}"
        )
    if (d_model // num_heads) % 2:
        raise ValueError(
            f"model.num_heads: head dim d_model/num_heads = {d_model // num_heads} must be even for RoPE"
        )
    if num_kv_heads is None:
        positive_int("model.kv_ratio", kv_ratio)
        if num_heads % kv_ratio:
            raise ValueError(
                f"model.kv_ratio: {kv_ratio} does not divide num_heads={num_heads}; "
                f"allowed values: {_divisors(num_heads)}"
            )
        num_kv_heads = num_heads // kv_ratio
    positive_int("model.num_kv_heads", num_kv_heads)
    if num_heads % num_kv_heads:
        raise ValueError(
            f"model.num_kv_heads: {num_kv_heads} must divide num_heads={num_heads}; "
            f"allowed values: {_divisors(num_heads)}"
        )
    if d_ff is None:
        positive_int("model.ffn_multiple_of", ffn_multiple_of)
        d_ff = _round_up(ffn_mult * d_model, ffn_multiple_of)
    positive_int("model.d_ff", d_ff)
    return Shape(
        num_layers=int(num_layers),
        d_model=int(d_model),
        num_heads=int(num_heads),
        num_kv_heads=int(num_kv_heads),
        d_ff=int(d_ff),
        vocab_size=int(vocab_size),
        seq_len=int(seq_len),
        tie_embeddings=bool(tie_embeddings),
    )


def positive_int(field: str, value: Any) -> None:
    """Raise ``ValueError`` naming ``field`` unless ``value`` is a positive ``int`` (bools refused)."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{field}: must be a positive integer, got {value!r}")


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def micro_batch_sizes(batch_seqs: int, processes: int = 1) -> list[int]:
    """Micro-batch sizes (sequences) that split a batch of ``batch_seqs`` sequences evenly into
    micro-batches, and those micro-batches evenly over ``processes`` data-parallel processes."""
    return [m for m in _divisors(batch_seqs) if (batch_seqs // m) % processes == 0]


def shape_from_config(model: Any, vocab_size: int, seq_len: int) -> Shape:
    """Apply the shape rule to a model config (a :class:`lab.config.ModelConfig` or any object with its fields)."""
    return resolve_shape(
        vocab_size=vocab_size,
        seq_len=seq_len,
        depth=model.depth,
        aspect=model.aspect,
        head_dim=model.head_dim,
        num_layers=model.num_layers,
        d_model=model.d_model,
        num_heads=model.num_heads,
        num_kv_heads=model.num_kv_heads,
        kv_ratio=model.kv_ratio,
        d_ff=model.d_ff,
        ffn_mult=model.ffn_mult,
        ffn_multiple_of=model.ffn_multiple_of,
        tie_embeddings=model.tie_embeddings,
    )


def param_groups(shape: Shape) -> dict[str, int]:
    """Parameter count by named group; the groups sum to N_total.

    Groups: ``embedding`` (token embedding), ``lm_head`` (0 when tied), ``attention`` (q, k, v,
    o projections), ``mlp`` (SwiGLU gate, up, down), ``norm`` (RMSNorm gains, two per block and
    the final one). No biases anywhere.
    """
    d, L, V = shape.d_model, shape.num_layers, shape.vocab_size
    hd = shape.head_dim
    q = d * shape.num_heads * hd
    kv = 2 * d * shape.num_kv_heads * hd
    o = shape.num_heads * hd * d
    return {
        "embedding": V * d,
        "lm_head": 0 if shape.tie_embeddings else V * d,
        "attention": L * (q + kv + o),
        "mlp": L * 3 * d * shape.d_ff,
        "norm": (2 * L + 1) * d,
    }


def non_embedding_params(shape: Shape) -> int:
    """N: parameters excluding the token embedding and the output head."""
    g = param_groups(shape)
    return g["attention"] + g["mlp"] + g["norm"]


def total_params(shape: Shape) -> int:
    """N_total: every distinct parameter (tied weights counted once)."""
    return sum(param_groups(shape).values())


def flops_per_token(shape: Shape) -> float:
    """Training FLOPs per token in the lab's convention (see the module docstring).

    ``6 * (N + d_model * V + num_layers * seq_len * d_attn)``.
    """
    return float(convention_flops_per_token(non_embedding_params(shape), shape.d_model, shape.num_layers,
                                            shape.vocab_size, shape.seq_len, shape.d_attn))


def convention_flops_per_token(params: float, d_model: float, num_layers: float, vocab_size: int, seq_len: int,
                               d_attn: float | None = None) -> float:
    """The convention's formula on sizes that need not be integers (a prior's continuous shape):
    ``6 * (N + d_model * V + num_layers * seq_len * d_attn)``, with ``d_attn = d_model`` by default."""
    head = d_model * vocab_size
    attn = num_layers * seq_len * (d_model if d_attn is None else d_attn)
    return 6.0 * (params + head + attn)


def flops_per_token_6n(shape: Shape) -> float:
    """The plain ``6 N`` convention (Kaplan et al. 2020): no head, no attention term."""
    return 6.0 * float(non_embedding_params(shape))


def flops_per_token_chinchilla(shape: Shape) -> float:
    """Hoffmann et al. (2022) Appendix F style: all matmuls incl. embedding-as-matmul, full attention."""
    g = param_groups(shape)
    matmul = g["attention"] + g["mlp"] + 2 * shape.d_model * shape.vocab_size
    attn = 2 * shape.num_layers * shape.seq_len * shape.d_attn  # QK^T and AV, no causal halving
    return 6.0 * float(matmul + attn)


def flops_per_token_palm(shape: Shape) -> float:
    """The PaLM MFU convention (Chowdhery et al. 2022, arXiv:2204.02311, Appendix B): ``6 N + 12 L T d``.

    The lab's matmuls (blocks and output head) plus attention over the full ``T x T`` square, as
    if no causal mask skipped half of it. An untied input embedding is a lookup and is not
    counted (PaLM ties it to the output head). Most published MFU figures use it; ``lab.bench`` reports
    MFU in this convention beside the lab's so its numbers can be compared with them.
    """
    n = non_embedding_params(shape) + shape.d_model * shape.vocab_size
    return 6.0 * float(n) + 12.0 * float(shape.num_layers * shape.seq_len * shape.d_attn)


def counts(shape: Shape) -> dict[str, Any]:
    """Everything a record needs about a shape: N, N_total, groups, FLOPs/token in three conventions."""
    return {
        "params": non_embedding_params(shape),
        "params_total": total_params(shape),
        "param_groups": param_groups(shape),
        "flops_per_token": flops_per_token(shape),
        "flops_per_token_6n": flops_per_token_6n(shape),
        "flops_per_token_chinchilla": flops_per_token_chinchilla(shape),
    }


def tokens_for_flops(flops: float, shape: Shape) -> float:
    """D that spends a FLOP budget C with this shape: ``D = C / flops_per_token``."""
    if not (flops > 0 and math.isfinite(flops)):
        raise ValueError(f"train.flops: must be a positive finite FLOP budget, got {flops!r}")
    return float(flops) / flops_per_token(shape)


def steps_for_tokens(tokens: float, batch_tokens: int, what: str = "train.tokens") -> int:
    """Optimizer steps that spend a token budget D in batches of B: ``round(D / B)``, at least 1.

    The achieved D is therefore within half a batch of the request. Raises ValueError naming
    ``what`` when the budget is less than half a batch.
    """
    steps = int(round(tokens / batch_tokens))
    if steps < 1:
        raise ValueError(
            f"{what}: the budget gives {tokens:.3g} tokens, less than half a batch "
            f"(train.batch_tokens={batch_tokens}); raise the budget or lower the batch"
        )
    return steps


def shape_from_mapping(m: Mapping[str, Any]) -> Shape:
    """Rebuild a Shape from a record's ``shape`` dict."""
    return Shape(**{k: m[k] for k in Shape.__dataclass_fields__})


def shape_for_params(
    target_params: float,
    *,
    vocab_size: int,
    seq_len: int,
    aspect: int = ASPECT,
    head_dim: int = HEAD_DIM,
    kv_ratio: int = 1,
    ffn_mult: float = FFN_MULT,
    ffn_multiple_of: int = FFN_MULTIPLE_OF,
    tie_embeddings: bool = False,
    max_layers: int = 48,
) -> Shape:
    """The shape whose N is closest (in log) to ``target_params`` with width/depth near ``aspect``.

    The depth knob alone moves N in coarse steps (N ~ 12 aspect^2 depth^3: depth 1 -> 2 is 8x),
    too coarse for an IsoFLOP profile. This searches every depth and every width that is a
    multiple of ``head_dim`` within a factor 2 of ``aspect * depth`` and minimises
    ``|log N - log target| + 0.1 |log(d_model / (aspect * depth))|``, so sizes land within a few
    percent of the target while the aspect ratio stays near the rule's.
    """
    if not (target_params > 0 and math.isfinite(target_params)):
        raise ValueError(f"target params must be positive and finite, got {target_params!r}")
    best, best_score = None, math.inf
    for layers in range(1, max_layers + 1):
        lo = max(head_dim, _round_up(aspect * layers / 2, head_dim))
        hi = max(lo, _round_up(aspect * layers * 2, head_dim))
        for d in range(lo, hi + 1, head_dim):
            heads = d // head_dim
            if heads % kv_ratio:
                continue
            s = resolve_shape(
                vocab_size=vocab_size, seq_len=seq_len, num_layers=layers, d_model=d, head_dim=head_dim,
                kv_ratio=kv_ratio, ffn_mult=ffn_mult, ffn_multiple_of=ffn_multiple_of, tie_embeddings=tie_embeddings,
            )
            score = abs(math.log(non_embedding_params(s) / target_params)) + 0.1 * abs(math.log(d / (aspect * layers)))
            if score < best_score:
                best, best_score = s, score
    assert best is not None
    return best
