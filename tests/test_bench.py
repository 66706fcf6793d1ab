"""The benchmark's baseline prototype and its interleaved timer (seconds, CPU)."""

import pytest
import torch

from lab.bench.prototype import PrototypeLM
from lab.bench.train import Case, step_speeds
from lab.counting import resolve_shape
from lab.model import Transformer


def _shape(**kw):
    return resolve_shape(vocab_size=64, seq_len=16, num_layers=2, d_model=32, num_heads=4, **kw)


def _copy_into_prototype(lab: Transformer, proto: PrototypeLM) -> None:
    """Map the lab's stored (fused) weights onto the prototype's separate projections."""
    s = lab.shape
    q, kv, f = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim, s.d_ff
    with torch.no_grad():
        proto.tok_emb.weight.copy_(lab.tok_emb.weight)
        proto.lm_head.weight.copy_(lab.lm_head.weight)
        proto.norm.weight.copy_(lab.norm.weight)
        for a, b in zip(lab.blocks, proto.blocks):
            w = a.attn.qkv.weight
            b.wq.weight.copy_(w[:q]), b.wk.weight.copy_(w[q : q + kv]), b.wv.weight.copy_(w[q + kv :])
            b.wo.weight.copy_(a.attn.proj.weight)
            b.w1.weight.copy_(a.mlp.gate_up.weight[:f]), b.w3.weight.copy_(a.mlp.gate_up.weight[f:])
            b.w2.weight.copy_(a.mlp.down.weight)
            b.n1.weight.copy_(a.attn_norm.weight), b.n2.weight.copy_(a.mlp_norm.weight)


def test_prototype_is_the_same_model_as_the_lab():
    """Same parameters and the same function: the baseline does exactly the lab's FLOPs."""
    for kw in ({}, {"num_kv_heads": 2}, {"tie_embeddings": True}):
        s = _shape(**kw)
        lab, proto = Transformer(s), PrototypeLM(s)
        assert sum(p.numel() for p in proto.parameters()) == sum(p.numel() for p in lab.parameters())
        _copy_into_prototype(lab, proto)
        x = torch.randint(0, 64, (3, 17))
        torch.testing.assert_close(proto(x[:, :-1], x[:, 1:]), lab(x[:, :-1], x[:, 1:]), rtol=1e-5, atol=1e-5)


def test_step_speeds_times_each_implementation():
    res = step_speeds(Case(_shape(), micro=2, dtype="float32"), ["prototype", "lab"], seconds=0.05)
    assert set(res) == {"prototype", "lab"}
    for r in res.values():
        assert r["steps"] >= 3 and r["tokens_per_s"] > 0 and r["flops_per_s"] > r["tokens_per_s"]


def test_step_speeds_window_probe_and_empty_rotation():
    res = step_speeds(Case(_shape(), micro=2, dtype="float32"), ["lab"], seconds=0.05, window_peak=True)
    assert set(res) == {"lab", "matmul"} and res["matmul"]["flops_per_s"] > 0
    assert step_speeds(Case(_shape(), micro=2, dtype="float32"), [], seconds=0.05) == {}


def test_rows_compute_each_mfu_from_one_measurement():
    from lab.bench.train import _rows
    from lab.counting import counts, flops_per_token_palm

    s = _shape()
    r = {
        "prototype": {"tokens_per_s": 100.0, "flops_per_s": 1e9, "steps": 3},
        "lab": {"tokens_per_s": 150.0, "flops_per_s": 1.5e9, "steps": 3},
        "matmul": {"flops_per_s": 3e9},
    }
    rows = _rows(r, ["prototype", "lab"], "cpu", "2 workers x 1 thread", "float32", s, 2, 4e9, 2e9)
    lab = rows[1]
    assert lab["mfu"] == 1.5e9 / 4e9 and lab["mfu_layout"] == 1.5e9 / 2e9 and lab["mfu_window"] == 0.5
    assert lab["mfu_palm"] == pytest.approx(lab["mfu"] * flops_per_token_palm(s) / counts(s)["flops_per_token"])
    assert lab["speedup_vs_prototype"] == 1.5 and rows[0]["speedup_vs_prototype"] == 1.0
    del r["matmul"], r["prototype"]
    (gpu,) = _rows(r, ["lab"], "cuda", "1 process", "bfloat16", s, 16, 1e12, 1e12)
    assert "mfu_window" not in gpu and gpu["speedup_vs_prototype"] is None


def test_the_peer_baseline_is_the_same_model():
    """transformers' LlamaForCausalLM at the bench's config, given the lab model's weights, computes the
    lab model's logits: the speed-up over it compares two implementations of one architecture."""
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install '.[dev]')")
    from lab.bench.train import hf_config

    for kw in ({}, {"num_kv_heads": 2}):
        s = _shape(**kw)
        torch.manual_seed(0)
        lab = Transformer(s)
        hf = transformers.LlamaForCausalLM(hf_config(s))
        assert sum(p.numel() for p in hf.parameters()) == sum(p.numel() for p in lab.parameters())
        q, kv, f = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim, s.d_ff
        with torch.no_grad():
            hf.model.embed_tokens.weight.copy_(lab.tok_emb.weight)
            hf.lm_head.weight.copy_(lab.lm_head.weight)
            hf.model.norm.weight.copy_(lab.norm.weight)
            for a, b in zip(lab.blocks, hf.model.layers):
                w = a.attn.qkv.weight
                b.self_attn.q_proj.weight.copy_(w[:q]), b.self_attn.k_proj.weight.copy_(w[q:q + kv])
                b.self_attn.v_proj.weight.copy_(w[q + kv:]), b.self_attn.o_proj.weight.copy_(a.attn.proj.weight)
                b.mlp.gate_proj.weight.copy_(a.mlp.gate_up.weight[:f]), b.mlp.up_proj.weight.copy_(a.mlp.gate_up.weight[f:])
                b.mlp.down_proj.weight.copy_(a.mlp.down.weight)
                b.input_layernorm.weight.copy_(a.attn_norm.weight), b.post_attention_layernorm.weight.copy_(a.mlp_norm.weight)
            x = torch.randint(0, 64, (2, 16))
            torch.testing.assert_close(hf(input_ids=x).logits, lab(x), rtol=1e-4, atol=1e-5)


def test_hf_and_packed_rows_in_one_rotation():
    impls = ["lab", "packed", "hf"]
    res = step_speeds(Case(_shape(), micro=2, dtype="float32", members=3), impls, seconds=0.05)
    assert res["packed"]["tokens_per_s"] > 0 and res["lab"]["tokens_per_s"] > 0
    assert "tokens_per_s" in res["hf"] or "transformers is not installed" in res["hf"]["skipped"]
    from lab.bench.train import _rows

    rows = _rows(res, impls, "cpu", "1 process", "float32", _shape(), 2, 1e12, 1e12, members=3)
    packed = next(r for r in rows if r["impl"] == "packed")
    assert packed["members"] == 3 and packed["speedup_vs_solo"] == pytest.approx(
        res["packed"]["tokens_per_s"] / res["lab"]["tokens_per_s"])
    assert next(r for r in rows if r["impl"] == "lab")["speedup_vs_solo"] is None
