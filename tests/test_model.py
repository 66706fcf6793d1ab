"""The decoder itself: causality, GQA, tied embeddings, loss at init."""

import math

import torch

from lab.config import ModelConfig
from lab.counting import shape_from_config
from lab.model import Transformer, apply_rope, rope_tables


def _model(**kw):
    cfg = ModelConfig(**{"depth": 2, "aspect": 16, "head_dim": 16, **kw})
    torch.manual_seed(0)
    return Transformer(shape_from_config(cfg, vocab_size=256, seq_len=32), cfg)


def test_causal_future_tokens_do_not_change_past_logits():
    for kw in ({}, {"kv_ratio": 2}):
        model = _model(**kw).eval()
        x = torch.randint(0, 256, (2, 32))
        y = x.clone()
        y[:, 20:] = torch.randint(0, 256, (2, 12))
        with torch.no_grad():
            a, b = model(x), model(y)
        assert torch.equal(a[:, :20], b[:, :20])
        assert not torch.allclose(a[:, 20:], b[:, 20:])


def test_initial_loss_near_uniform():
    model = _model()
    x = torch.randint(0, 256, (4, 32))
    assert abs(model(x, x).item() - math.log(256)) < 0.1


def test_tied_embeddings_share_storage():
    model = _model(tie_embeddings=True)
    assert model.lm_head.weight is model.tok_emb.weight
    assert model.param_groups()["lm_head"] == 0


def test_rope_is_a_rotation_and_relative():
    cos, sin = rope_tables(16, 8, 10000.0)
    x = torch.randn(1, 16, 2, 8)
    r = apply_rope(x, cos, sin)
    assert torch.allclose(r.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    # dot products depend on relative position only
    q = torch.randn(8).expand(1, 16, 1, 8)
    rq = apply_rope(q, cos, sin)[0, :, 0]
    assert torch.allclose(rq[3] @ rq[5], rq[10] @ rq[12], atol=1e-4)
