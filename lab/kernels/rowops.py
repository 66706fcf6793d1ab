"""Cross-entropy, SwiGLU and RMSNorm through the lab's CPU kernels (``rowops.c``), as torch custom ops
with autograd: one pass forward, one pass backward each.

Every op takes *groups*: independent models stacked on the row axis (a pack's members), each with its
own loss mean or RMSNorm gain, summed over its own rows in an order that does not depend on the
others, so a packed member gets its solo model's bits. :func:`usable` says when the kernels apply (CPU,
fp32, contiguous, built); :mod:`lab.model` falls back to torch's ops otherwise.

Each op runs the same C calls on two paths: registered custom ops (``lab::ce_fwd`` ...), which
``torch.compile`` keeps as opaque calls, and plain ``autograd.Function``s for eager steps. The custom
op's dispatch costs about 60 us more per forward and backward pair (measured: RMSNorm of 512 x 64
rows, 147 against 88 us), which is 5-9% of a proxy's step at the study's 512-token batches; the
public functions take the custom op only while compiling. Both give the same bits.
"""

from __future__ import annotations

import ctypes

import torch

from lab.kernels import load

_P, _I, _L, _F = ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_float
_SIGNATURES = {
    "lab_ce_fwd": [_P, _P, _I, _L, _I, _P, _P, _I],
    "lab_ce_bwd": [_P, _P, _P, _P, _I, _L, _I, _P, _I],
    "lab_swiglu_fwd": [_P, _P, _P, _L, _I],
    "lab_swiglu_bwd": [_P, _P, _P, _P, _P, _L, _I],
    "lab_rms_fwd": [_P, _P, _P, _P, _I, _L, _I, _F, _I],
    "lab_rms_bwd": [_P, _P, _P, _P, _P, _P, _I, _L, _I, _I],
}
_LIB: list = []


def _lib() -> ctypes.CDLL | None:
    if not _LIB:
        lib = load("rowops")
        if lib is not None:
            for name, args in _SIGNATURES.items():
                getattr(lib, name).argtypes, getattr(lib, name).restype = args, None
        _LIB.append(lib)
    return _LIB[0]


@torch.compiler.assume_constant_result  # traced as a constant: no graph break on the ctypes object
def available() -> bool:
    """True when the kernel library is built and loaded (built on the first call)."""
    return _lib() is not None


def usable(*tensors: torch.Tensor) -> bool:
    """True when the kernels can take these tensors: CPU, fp32 (targets int64), contiguous, no autocast."""
    return (all(t.device.type == "cpu" and t.is_contiguous() for t in tensors)
            and all(t.dtype in (torch.float32, torch.int64) for t in tensors)
            and not torch.is_autocast_enabled("cpu") and available())


def _threads() -> int:
    return torch.get_num_threads()


# ---- cross-entropy --------------------------------------------------------------------------------


def _ce_fwd(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    K, N, V = logits.shape
    loss, lse = logits.new_empty(K), logits.new_empty(K, N)
    _lib().lab_ce_fwd(logits.data_ptr(), targets.data_ptr(), K, N, V, lse.data_ptr(), loss.data_ptr(), _threads())
    return loss, lse


def _ce_bwd(logits: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    K, N, V = logits.shape
    scale = (grad.float() / N).contiguous()
    dx = torch.empty_like(logits)
    _lib().lab_ce_bwd(logits.data_ptr(), targets.data_ptr(), lse.data_ptr(), scale.data_ptr(), K, N, V, dx.data_ptr(),
                      _threads())
    return dx


@torch.library.custom_op("lab::ce_fwd", mutates_args=())
def ce_fwd(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each group's mean cross-entropy (K,) of logits (K, N, V) at targets (K, N), and the rows'
    log-sum-exp (K, N) for the backward."""
    return _ce_fwd(logits, targets)


@ce_fwd.register_fake
def _(logits, targets):
    K, N, _ = logits.shape
    return logits.new_empty(K), logits.new_empty(K, N)


@torch.library.custom_op("lab::ce_bwd", mutates_args=())
def ce_bwd(logits: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """d(loss[k]) / d(logits[k]) times ``grad[k]``: (softmax - onehot) grad[k] / N."""
    return _ce_bwd(logits, targets, lse, grad)


@ce_bwd.register_fake
def _(logits, targets, lse, grad):
    return torch.empty_like(logits)


def _ce_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[1], output[1])
    ctx.set_materialize_grads(False)


def _ce_backward(ctx, grad_loss, grad_lse):
    logits, targets, lse = ctx.saved_tensors
    return ce_bwd(logits, targets, lse, grad_loss), None


torch.library.register_autograd("lab::ce_fwd", _ce_backward, setup_context=_ce_setup)


class _CrossEntropy(torch.autograd.Function):
    """The eager path of ``lab::ce_fwd`` / ``lab::ce_bwd`` (the same C calls)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss, lse = _ce_fwd(logits, targets)
        ctx.save_for_backward(logits, targets, lse)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        return _ce_bwd(logits, targets, lse, grad_loss), None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per group: logits (K, N, V), targets (K, N) -> (K,)."""
    if torch.compiler.is_compiling():
        return ce_fwd(logits, targets)[0]
    return _CrossEntropy.apply(logits, targets)


# ---- SwiGLU ---------------------------------------------------------------------------------------


def _swiglu_fwd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    h = torch.empty_like(a)
    _lib().lab_swiglu_fwd(a.data_ptr(), b.data_ptr(), h.data_ptr(), a.numel(), _threads())
    return h


def _swiglu_bwd(a: torch.Tensor, b: torch.Tensor, dh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    da, db = torch.empty_like(a), torch.empty_like(b)
    dh = dh.contiguous()
    _lib().lab_swiglu_bwd(a.data_ptr(), b.data_ptr(), dh.data_ptr(), da.data_ptr(), db.data_ptr(), a.numel(),
                          _threads())
    return da, db


@torch.library.custom_op("lab::swiglu", mutates_args=())
def swiglu_op(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """silu(a) * b, elementwise (same shapes, contiguous)."""
    return _swiglu_fwd(a, b)


@swiglu_op.register_fake
def _(a, b):
    return torch.empty_like(a)


@torch.library.custom_op("lab::swiglu_bwd", mutates_args=())
def swiglu_bwd(a: torch.Tensor, b: torch.Tensor, dh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _swiglu_bwd(a, b, dh)


@swiglu_bwd.register_fake
def _(a, b, dh):
    return torch.empty_like(a), torch.empty_like(b)


def _swiglu_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _swiglu_backward(ctx, dh):
    a, b = ctx.saved_tensors
    return swiglu_bwd(a, b, dh)


torch.library.register_autograd("lab::swiglu", _swiglu_backward, setup_context=_swiglu_setup)


class _SwiGLU(torch.autograd.Function):
    """The eager path of ``lab::swiglu`` / ``lab::swiglu_bwd`` (the same C calls)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return _swiglu_fwd(a, b)

    @staticmethod
    def backward(ctx, dh: torch.Tensor):
        return _swiglu_bwd(*ctx.saved_tensors, dh)


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """silu(a) * b, elementwise (same shapes, contiguous)."""
    if torch.compiler.is_compiling():
        return swiglu_op(a, b)
    return _SwiGLU.apply(a, b)


# ---- RMSNorm --------------------------------------------------------------------------------------


def _rms_fwd(x: torch.Tensor, w: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    K, M, d = x.shape
    y, rstd = torch.empty_like(x), x.new_empty(K, M)
    _lib().lab_rms_fwd(x.data_ptr(), w.data_ptr(), y.data_ptr(), rstd.data_ptr(), K, M, d, eps, _threads())
    return y, rstd


def _rms_bwd(x: torch.Tensor, w: torch.Tensor, rstd: torch.Tensor, g: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    K, M, d = x.shape
    dx, dw = torch.empty_like(x), torch.empty_like(w)
    g = g.contiguous()
    _lib().lab_rms_bwd(x.data_ptr(), w.data_ptr(), rstd.data_ptr(), g.data_ptr(), dx.data_ptr(), dw.data_ptr(), K, M,
                       d, _threads())
    return dx, dw


@torch.library.custom_op("lab::rms_norm", mutates_args=())
def rms_norm_op(x: torch.Tensor, w: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x / rms(x) * w over the last dimension: x (K, M, d) with gains w (K, d); and 1 / rms per row."""
    return _rms_fwd(x, w, eps)


@rms_norm_op.register_fake
def _(x, w, eps):
    return torch.empty_like(x), x.new_empty(x.shape[:2])


@torch.library.custom_op("lab::rms_norm_bwd", mutates_args=())
def rms_norm_bwd(x: torch.Tensor, w: torch.Tensor, rstd: torch.Tensor, g: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    return _rms_bwd(x, w, rstd, g)


@rms_norm_bwd.register_fake
def _(x, w, rstd, g):
    return torch.empty_like(x), torch.empty_like(w)


def _rms_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[1], output[1])
    ctx.set_materialize_grads(False)


def _rms_backward(ctx, g, grad_rstd):
    x, w, rstd = ctx.saved_tensors
    dx, dw = rms_norm_bwd(x, w, rstd, g)
    return dx, dw, None


torch.library.register_autograd("lab::rms_norm", _rms_backward, setup_context=_rms_setup)


class _RMSNorm(torch.autograd.Function):
    """The eager path of ``lab::rms_norm`` / ``lab::rms_norm_bwd`` (the same C calls)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        y, rstd = _rms_fwd(x, w, eps)
        ctx.save_for_backward(x, w, rstd)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        dx, dw = _rms_bwd(*ctx.saved_tensors, g)
        return dx, dw, None


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) * w over the last dimension: x (K, M, d) with gains w (K, d)."""
    if torch.compiler.is_compiling():
        return rms_norm_op(x, w, eps)[0]
    return _RMSNorm.apply(x, w, eps)
