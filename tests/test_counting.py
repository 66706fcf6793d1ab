"""Parameter and FLOP formulas against the real module; the shape rule and its errors."""

import math

import pytest
import torch

from lab.config import ModelConfig
from lab.counting import (
    counts,
    flops_per_token,
    non_embedding_params,
    resolve_shape,
    tokens_for_flops,
    total_params,
)
from lab.counting import shape_from_config
from lab.model import Transformer

SHAPES = [
    dict(depth=2, aspect=16, head_dim=16),
    dict(depth=4),
    dict(depth=3, kv_ratio=3, head_dim=32, aspect=32),  # grouped-query attention
    dict(depth=2, tie_embeddings=True),
    dict(num_layers=3, d_model=96, num_heads=6, num_kv_heads=2, d_ff=200),  # explicit shape
]


@pytest.mark.parametrize("kw", SHAPES)
def test_param_formula_matches_module(kw):
    cfg = ModelConfig(**kw)
    shape = shape_from_config(cfg, vocab_size=256, seq_len=64)
    model = Transformer(shape, cfg)
    real_total = sum(p.numel() for p in model.parameters())
    assert total_params(shape) == real_total
    assert model.param_groups() == counts(shape)["param_groups"]
    non_emb = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("tok_emb", "lm_head")))
    assert non_embedding_params(shape) == non_emb


def test_flops_per_token_matches_profiler():
    """The lab's C convention equals the matmul FLOPs torch counts in forward + backward."""
    from torch.utils.flop_counter import FlopCounterMode

    shape = resolve_shape(vocab_size=256, seq_len=64, depth=2, aspect=32, head_dim=16)
    model = Transformer(shape)
    x = torch.randint(0, 256, (2, 64))
    with FlopCounterMode(display=False) as fc:
        model(x, x).backward()
    by_op = fc.get_flop_counts()["Global"]
    attn = sum(v for op, v in by_op.items() if "scaled_dot_product" in str(op)) / x.numel()
    matmul = fc.get_total_flops() / x.numel() - attn
    g = counts(shape)["param_groups"]
    assert matmul == 6 * (g["attention"] + g["mlp"] + g["lm_head"])  # norms are not matmuls
    causal_attn = 6 * shape.num_layers * shape.seq_len * shape.d_attn
    assert flops_per_token(shape) == 6 * non_embedding_params(shape) + 6 * g["lm_head"] + causal_attn
    if attn:  # torch counts attention over the full (non-causal) square: twice the causal term
        assert attn == pytest.approx(2 * causal_attn, rel=1e-9)


def test_shape_rule_grows_width_with_depth():
    widths = [resolve_shape(vocab_size=256, seq_len=64, depth=d).d_model for d in (1, 2, 4, 8)]
    assert widths == [32, 64, 128, 256]
    s = resolve_shape(vocab_size=256, seq_len=64, depth=3, aspect=48, head_dim=64)
    assert s.d_model == 192 and s.num_heads == 3 and s.d_ff % 32 == 0


def test_tokens_for_flops():
    s = resolve_shape(vocab_size=256, seq_len=64, depth=2)
    assert tokens_for_flops(1e12, s) == pytest.approx(1e12 / flops_per_token(s))
    for bad in (0, -1, math.inf, math.nan):
        with pytest.raises(ValueError, match="train.flops"):
            tokens_for_flops(bad, s)


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(num_layers=2, d_model=100, num_heads=3), "model.num_heads"),
        (dict(depth=2, num_heads=4, num_kv_heads=3), "model.num_kv_heads"),
        (dict(depth=2, kv_ratio=3), "model.kv_ratio"),
        (dict(depth=0), "model.depth"),
        (dict(num_layers=2, d_model=96, head_dim=64), "model.head_dim"),
        (dict(depth=None), "model.depth"),
    ],
)
def test_invalid_shapes_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        resolve_shape(vocab_size=256, seq_len=64, **kw)
