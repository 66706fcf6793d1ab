"""One optimizer step and one evaluation: the work every training run, branch and benchmark repeats.

:func:`train_step` is what :mod:`lab.bench` times, so the benchmark's numbers are the trainer's.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable

import torch

from lab.config import TrainConfig
from lab.data.shards import TokenCorpus, bits_per_byte
from lab.hardware import autocast
from lab.model import Transformer

GNS_SMOOTHING = 0.95  # exponential moving average of the noise-scale estimates, per step


def make_optimizer(model: Transformer, t: TrainConfig, fused: bool = True) -> torch.optim.Optimizer:
    """AdamW; the fused kernel (CPU and CUDA in recent torch) when available."""
    kw = dict(lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps)
    if not fused:
        return torch.optim.AdamW(model.optimizer_groups(t.weight_decay), foreach=True, **kw)
    try:
        return torch.optim.AdamW(model.optimizer_groups(t.weight_decay), fused=True, **kw)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(model.optimizer_groups(t.weight_decay), foreach=True, **kw)


def train_step(
    fwd: torch.nn.Module,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    accum: int,
    device: torch.device,
    dtype: torch.dtype | None,
    grad_clip: float,
    no_sync: Any = None,
    gns: dict[str, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over ``accum`` micro-batches; returns (mean loss, pre-clip grad norm).

    ``no_sync``: DDP's (or FSDP2's, :func:`lab.hardware.fsdp_no_sync`) context manager; gradients
    are reduced on the last micro-batch only.
    The benchmark times exactly this function, so its numbers are the trainer's numbers.
    """
    loss_sum = torch.zeros((), device=device)
    prev: list[torch.Tensor] | None = None
    small_sq = 0.0
    for i, (x, y) in enumerate(micro_batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sync = no_sync() if (no_sync is not None and i < accum - 1) else contextlib.nullcontext()
        with sync:
            with autocast(device, dtype):
                loss = fwd(x, y)
            (loss / accum).backward()
        loss_sum += loss.detach()
        if gns is not None:  # this micro-batch's gradient = accumulated now - accumulated before
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            sq = sum(float(((g - q) ** 2).sum()) for g, q in zip(grads, prev)) if prev is not None \
                else sum(float((g * g).sum()) for g in grads)
            small_sq += sq * accum  # |g_i|^2 = accum^2 |diff|^2, averaged over the accum micro-batches
            prev = [g.detach().clone() for g in grads]
    if gns is not None:
        gns["small"] = small_sq
        gns["big"] = sum(float((p.grad * p.grad).sum()) for p in model.parameters() if p.grad is not None)
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    if hasattr(gnorm, "full_tensor"):  # FSDP: a sharded (DTensor) norm
        gnorm = gnorm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum / accum, gnorm


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    val_sets: dict[str, torch.Tensor],
    corpus: TokenCorpus,
    weights: dict[str, float],
    micro: int,
    device: torch.device,
    dtype: torch.dtype | None,
) -> dict[str, float]:
    """Per-domain and weighted validation loss (nats/token) and bits-per-byte."""
    was_training = model.training
    model.eval()
    losses: dict[str, float] = {}
    for name, rows in val_sets.items():
        total, count = 0.0, 0
        for i in range(0, len(rows), micro):
            chunk = rows[i : i + micro].to(device, non_blocking=True)
            with autocast(device, dtype):
                logits = model(chunk[:, :-1])
            loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum"
            )
            total += float(loss)
            count += chunk[:, 1:].numel()
        losses[name] = total / count
    model.train(was_training)
    return eval_summary(losses, corpus, weights)


def eval_summary(losses: dict[str, float], corpus: TokenCorpus, weights: dict[str, float]) -> dict[str, float]:
    """The evaluation's row from per-domain mean losses: ``loss_val_<domain>``, ``bpb_val_<domain>``
    and the ``weights``-weighted ``loss_val`` and ``bpb_val``."""
    out: dict[str, float] = {}
    for name, loss in losses.items():
        out[f"loss_val_{name}"] = loss
        out[f"bpb_val_{name}"] = bits_per_byte(loss, corpus.domains[name].val_bytes_per_token)
    wsum = sum(w for n, w in weights.items() if n in losses)
    out["loss_val"] = sum(w * out[f"loss_val_{n}"] for n, w in weights.items() if n in losses) / wsum
    out["bpb_val"] = sum(w * out[f"bpb_val_{n}"] for n, w in weights.items() if n in losses) / wsum
    return out


def update_gns(state: dict[str, Any], gns: dict[str, float], b_small: float, b_big: float) -> None:
    """Fold one step's micro-batch and batch squared gradient norms into smoothed |G|^2 and tr(Sigma).

    The unbiased estimates of McCandlish et al. (2018, arXiv:1812.06162, app. A) from the norms at
    batch sizes ``b_small`` (one micro-batch) and ``b_big`` (the batch), in tokens; B_noise =
    ``gns_S / gns_G2``. ``state`` holds ``gns_G2`` and ``gns_S`` (None before the first step).
    """
    G2 = (b_big * gns["big"] - b_small * gns["small"]) / (b_big - b_small)
    S = (gns["small"] - gns["big"]) / (1 / b_small - 1 / b_big)
    a = GNS_SMOOTHING
    state["gns_G2"] = G2 if state.get("gns_G2") is None else a * state["gns_G2"] + (1 - a) * G2
    state["gns_S"] = S if state.get("gns_S") is None else a * state["gns_S"] + (1 - a) * S
