"""The lab's CPU attention kernel: torch's attention to float rounding, forward and backward, across
head widths, lengths and grouped-query layouts; deterministic; torch's kernel when it cannot be used."""

import pytest
import torch
import torch.nn.functional as F

from lab.kernels.attention import causal_attention, usable

pytestmark = pytest.mark.skipif(not usable(*(torch.zeros(1, 1, 16, 16),) * 3),
                                reason="the attention kernel could not be built here (no C compiler?)")


def _qkv(B, H, G, T, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda heads: torch.randn(B, T, heads, D, generator=g).transpose(1, 2).requires_grad_()  # noqa: E731
    return mk(H), mk(G), mk(G)


@pytest.mark.parametrize("B,H,G,T,D", [
    (2, 2, 2, 64, 16), (3, 4, 2, 100, 32), (2, 2, 2, 256, 32), (1, 3, 1, 37, 64), (1, 2, 2, 130, 128),
    (2, 4, 4, 33, 48), (1, 1, 1, 1, 16), (2, 2, 2, 17, 32),
])
def test_matches_torch_attention_forward_and_backward(B, H, G, T, D):
    q, k, v = _qkv(B, H, G, T, D)
    out = causal_attention(q, k, v)
    grad = torch.randn_like(out)
    out.backward(grad)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q2, k2.repeat_interleave(H // G, 1), v2.repeat_interleave(H // G, 1),
                                         is_causal=True)
    ref.backward(grad)
    for a, b in ((out, ref), (q.grad, q2.grad), (k.grad, k2.grad), (v.grad, v2.grad)):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-6 * max(1.0, float(b.detach().abs().max())))


@pytest.mark.parametrize("H,G,T,D", [(2, 2, 64, 16), (4, 2, 50, 32), (1, 1, 256, 64)])
def test_rope_inside_the_kernel_equals_rotating_first(H, G, T, D):
    """q, k rotated inside the kernel (and their gradients rotated back) = apply_rope, then attention."""
    from lab.model import apply_rope, rope_tables

    cos2, sin2 = rope_tables(T, D, 10000.0)
    halves = (cos2[:, 0, 0, :].contiguous(), sin2[:, 0, 1, :].contiguous())
    q, k, v = (t.transpose(1, 2).detach().requires_grad_() for t in _qkv(2, H, G, T, D))  # (B, T, heads, D)
    out = causal_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), rope=halves)
    grad = torch.randn_like(out)
    out.backward(grad)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    rq, rk = apply_rope(q2, cos2, sin2).transpose(1, 2), apply_rope(k2, cos2, sin2).transpose(1, 2)
    ref = F.scaled_dot_product_attention(rq, rk.repeat_interleave(H // G, 1), v2.transpose(1, 2).repeat_interleave(
        H // G, 1), is_causal=True)
    ref.backward(grad)
    for a, b in ((out, ref), (q.grad, q2.grad), (k.grad, k2.grad), (v.grad, v2.grad)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-6 * max(1.0, float(b.detach().abs().max())))


def test_causal_and_deterministic():
    q, k, v = _qkv(2, 2, 2, 48, 32)
    with torch.no_grad():
        a = causal_attention(q, k, v)
        k2, v2 = k.clone(), v.clone()
        k2[:, :, 30:], v2[:, :, 30:] = 0.0, 7.0  # the future does not reach the past
        b = causal_attention(q, k2, v2)
    assert torch.equal(a[:, :, :30], b[:, :, :30]) and not torch.equal(a[:, :, 30:], b[:, :, 30:])
    # the same rows give the same bits whatever sits beside them in the batch, and on any thread count
    with torch.no_grad():
        alone = causal_attention(q[:1], k[:1], v[:1])
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            two = causal_attention(q, k, v)
        finally:
            torch.set_num_threads(threads)
    assert torch.equal(alone, a[:1]) and torch.equal(two, a)


def test_inference_and_training_paths_agree():
    q, k, v = _qkv(2, 2, 2, 40, 16)
    with torch.no_grad():
        a = causal_attention(q, k, v)
    assert torch.equal(a, causal_attention(q, k, v).detach())


def test_outputs_come_in_the_models_memory_layout():
    """(B, H, T, D) views of (B, T, H, D) memory: the model's transposes around attention are free."""
    q, k, v = _qkv(2, 4, 2, 32, 16)
    out = causal_attention(q, k, v)
    assert out.transpose(1, 2).is_contiguous()
    out.sum().backward()
    assert q.grad.transpose(1, 2).is_contiguous() and k.grad.transpose(1, 2).is_contiguous()


def test_what_the_kernel_does_not_take_goes_to_torch():
    q, k, v = _qkv(1, 2, 2, 16, 16)
    assert usable(q, k, v)
    assert not usable(*(t.double() for t in (q, k, v)))
    assert not usable(*(torch.zeros(1, 2, 16, 24),) * 3)  # head width not a multiple of 16
    assert not usable(*(torch.zeros(1, 2, 4096, 16),) * 3)  # the scratch tiles would be too large
    assert not usable(torch.zeros(1, 3, 16, 16), torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16))


def test_the_model_uses_the_kernel_and_falls_back(monkeypatch):
    from lab import model as lab_model

    rope = lab_model.Rope(*(torch.zeros(16, 1, 2, 12),) * 2, *(torch.zeros(16, 12),) * 2)
    q, k, v = (t.transpose(1, 2) for t in _qkv(1, 2, 2, 16, 24))  # head width 24: torch's attention
    ref = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q * 0, k * 0, v)), is_causal=True)
    torch.testing.assert_close(lab_model.rotary_attention(q, k, v, rope), ref.transpose(1, 2))
    calls = []
    monkeypatch.setattr("lab.kernels.attention.causal_attention", lambda *a, **kw: calls.append(1) or a[0])
    lab_model.rotary_attention(*(t.transpose(1, 2) for t in _qkv(1, 2, 2, 16, 16)), rope)
    assert calls == [1]


@pytest.mark.slow
def test_compiles_as_an_opaque_op():
    q, k, v = _qkv(2, 2, 2, 32, 16)
    f = torch.compile(lambda q, k, v: causal_attention(q, k, v) * 2.0)
    out = f(q, k, v)
    out.sum().backward()
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    ref = causal_attention(q2, k2, v2) * 2.0
    ref.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(q.grad, q2.grad)


def _grads(f, *xs):
    """f's output and its inputs' gradients for a fixed output gradient."""
    xs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in xs]
    out = f(*xs)
    out.backward(torch.linspace(-1.0, 1.0, out.numel()).view(out.shape))
    return [out.detach()] + [x.grad for x in xs if x.requires_grad]


def test_eager_functions_and_compile_custom_ops_give_the_same_bits():
    """Eager steps call the kernels through autograd.Functions (cheaper dispatch), torch.compile through
    the registered custom ops; both paths must be the same computation."""
    from lab.kernels import attention as A
    from lab.kernels import rowops as R

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 64, 32, generator=g), torch.randn(2, 32, generator=g)
    a, b = torch.randn(128, 48, generator=g), torch.randn(128, 48, generator=g)
    logits, targets = torch.randn(2, 64, 256, generator=g), torch.randint(0, 256, (2, 64), generator=g)
    q, k, v = (t.detach() for t in _qkv(2, 4, 2, 48, 16))
    pairs = [
        (lambda x, w: R.rms_norm(x, w, 1e-5), lambda x, w: R.rms_norm_op(x, w, 1e-5)[0], (x, w)),
        (R.swiglu, R.swiglu_op, (a, b)),
        (R.cross_entropy, lambda lg, t: R.ce_fwd(lg, t)[0], (logits, targets)),
        (A.causal_attention, lambda q, k, v: A.attn_fwd(q, k, v, A._NO_ROPE, A._NO_ROPE)[0], (q, k, v)),
    ]
    for eager, op, inputs in pairs:
        for e, o in zip(_grads(eager, *inputs), _grads(op, *inputs)):
            assert torch.equal(e, o)
