"""Causal attention through the lab's CPU kernel (``attention.c``): a torch custom op with autograd.

:func:`causal_attention` is what :func:`lab.model.attention` calls on CPU in fp32 when the kernel
is built (:func:`usable`); it takes and returns the (B, H, T, D) views the model makes, reads them
through their strides, and returns outputs and input gradients laid out as (B, T, H, D) memory, so
the model's transposes around it cost no copies. The ops (``lab::attn_fwd``, ``lab::attn_infer``,
``lab::attn_bwd``) have fake implementations, so ``torch.compile`` keeps them as calls and fuses the
work around them. The forward keeps each row's log-sum-exp; the backward recomputes the probabilities from it.
"""

from __future__ import annotations

import ctypes
import math

import torch

from lab.kernels import load

MAX_T = 2048  # the backward's per-thread scratch holds two T x T float tiles (32 MiB at 2048)
_ARGTYPES_FWD = [ctypes.c_void_p] * 7 + [ctypes.c_int] * 5 + [ctypes.c_long] * 12 + [ctypes.c_float, ctypes.c_int]
_ARGTYPES_BWD = [ctypes.c_void_p] * 11 + [ctypes.c_int] * 5 + [ctypes.c_long] * 24 + [ctypes.c_float, ctypes.c_int]
_LIB: list = []


def _lib() -> ctypes.CDLL | None:
    if not _LIB:
        lib = load("attention")
        if lib is not None:
            lib.lab_attn_fwd.argtypes, lib.lab_attn_fwd.restype = _ARGTYPES_FWD, None
            lib.lab_attn_bwd.argtypes, lib.lab_attn_bwd.restype = _ARGTYPES_BWD, None
        _LIB.append(lib)
    return _LIB[0]


@torch.compiler.assume_constant_result  # traced as a constant: no graph break on the ctypes object
def available() -> bool:
    """True when the kernel library is built and loaded (built on the first call)."""
    return _lib() is not None


def usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """True when the kernel handles these inputs: CPU, fp32, head width a multiple of 16 up to 256,
    T up to :data:`MAX_T`, rows contiguous, heads a multiple of kv heads; and the kernel is built."""
    B, H, T, D = q.shape
    return (q.device.type == "cpu" and q.dtype == k.dtype == v.dtype == torch.float32 and D % 16 == 0 and D <= 256
            and T <= MAX_T and k.shape[1] > 0 and H % k.shape[1] == 0 and not torch.is_autocast_enabled("cpu")
            and all(t.stride(-1) == 1 for t in (q, k, v)) and available())


def _bthd(B: int, H: int, T: int, D: int, like: torch.Tensor) -> torch.Tensor:
    """An empty (B, H, T, D) tensor laid out as (B, T, H, D) memory."""
    return torch.empty((B, T, H, D), dtype=like.dtype, device=like.device).transpose(1, 2)


def _strides(t: torch.Tensor) -> list[int]:
    return [t.stride(0), t.stride(1), t.stride(2)]


def _ptr(t: torch.Tensor | None) -> int | None:
    return t.data_ptr() if t is not None and t.numel() else None


def _fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None,
         keep_lse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    B, H, T, D = q.shape
    o = _bthd(B, H, T, D, q)
    lse = torch.empty((B, H, T) if keep_lse else (0,), dtype=q.dtype, device=q.device)
    _lib().lab_attn_fwd(q.data_ptr(), k.data_ptr(), v.data_ptr(), _ptr(cos), _ptr(sin), o.data_ptr(), _ptr(lse),
                        B, H, k.shape[1], T, D, *_strides(q), *_strides(k), *_strides(v), *_strides(o),
                        1.0 / math.sqrt(D), torch.get_num_threads())
    return o, lse


@torch.library.custom_op("lab::attn_fwd", mutates_args=())
def attn_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention output (B, H, T, D) and each row's log-sum-exp (B, H, T), from which the
    backward recomputes the probabilities; q and k rotated by the RoPE tables ``cos``, ``sin``
    (T, D/2) first (empty: none)."""
    return _fwd(q, k, v, cos, sin, keep_lse=True)


@attn_fwd.register_fake
def _(q, k, v, cos, sin):
    B, H, T, D = q.shape
    return _bthd(B, H, T, D, q), q.new_empty((B, H, T))


@torch.library.custom_op("lab::attn_infer", mutates_args=())
def attn_infer(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
               ) -> torch.Tensor:
    """Causal attention output only (no gradient wanted: the log-sum-exp is not kept)."""
    return _fwd(q, k, v, cos, sin, keep_lse=False)[0]


@attn_infer.register_fake
def _(q, k, v, cos, sin):
    return _bthd(*q.shape, q)


def _bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
         o: torch.Tensor, lse: torch.Tensor, do: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, H, T, D = q.shape
    G = k.shape[1]
    if do.stride(-1) != 1:
        do = do.contiguous()
    dq, dk, dv = _bthd(B, H, T, D, q), _bthd(B, G, T, D, k), _bthd(B, G, T, D, v)
    _lib().lab_attn_bwd(q.data_ptr(), k.data_ptr(), v.data_ptr(), _ptr(cos), _ptr(sin), o.data_ptr(), lse.data_ptr(),
                        do.data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr(), B, H, G, T, D,
                        *_strides(q), *_strides(k), *_strides(v), *_strides(o), *_strides(do),
                        *_strides(dq), *_strides(dk), *_strides(dv), 1.0 / math.sqrt(D), torch.get_num_threads())
    return dq, dk, dv


@torch.library.custom_op("lab::attn_bwd", mutates_args=())
def attn_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
             o: torch.Tensor, lse: torch.Tensor, do: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of the (unrotated) q, k and of v from the output's gradient ``do``."""
    return _bwd(q, k, v, cos, sin, o, lse, do)


@attn_bwd.register_fake
def _(q, k, v, cos, sin, o, lse, do):
    B, H, T, D = q.shape
    G = k.shape[1]
    return _bthd(B, H, T, D, q), _bthd(B, G, T, D, k), _bthd(B, G, T, D, v)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs, *output)
    ctx.set_materialize_grads(False)  # the log-sum-exp gets no gradient: no tensor of zeros for it


def _backward(ctx, grad_o, grad_lse):
    q, k, v, cos, sin, o, lse = ctx.saved_tensors
    dq, dk, dv = attn_bwd(q, k, v, cos, sin, o, lse, grad_o)
    return dq, dk, dv, None, None


torch.library.register_autograd("lab::attn_fwd", _backward, setup_context=_setup)


class _Attention(torch.autograd.Function):
    """The eager path of ``lab::attn_fwd`` / ``lab::attn_bwd`` (the same C calls)."""

    @staticmethod
    def forward(ctx, q, k, v, cos, sin):
        o, lse = _fwd(q, k, v, cos, sin, keep_lse=True)
        ctx.save_for_backward(q, k, v, cos, sin, o, lse)
        return o

    @staticmethod
    def backward(ctx, grad_o):
        dq, dk, dv = _bwd(*ctx.saved_tensors, grad_o)
        return dq, dk, dv, None, None


_NO_ROPE = torch.empty(0)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Causal softmax attention of q (B, H, T, D) over k, v (B, G, T, D), scale 1/sqrt(D); with
    ``rope = (cos, sin)`` (contiguous (T, D/2) tables) q and k are rotated first (rotate-half pairs)."""
    cos, sin = rope if rope is not None else (_NO_ROPE, _NO_ROPE)
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if torch.compiler.is_compiling():
        return attn_fwd(q, k, v, cos, sin)[0] if grad else attn_infer(q, k, v, cos, sin)
    return _Attention.apply(q, k, v, cos, sin) if grad else _fwd(q, k, v, cos, sin, keep_lse=False)[0]
