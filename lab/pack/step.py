"""One optimizer step of a pack: the packed model, each member's solo optimizer on its view, clipping.

A :class:`Group` is what a pack trains with: the :class:`~lab.pack.model.PackedTransformer`, for
each member a view of its slice as a solo :class:`lab.model.Transformer` and the solo trainer's own
optimizer on that view (:func:`lab.step.make_optimizer`), and the forward it calls (compiled or not).
:meth:`Group.step` hands member k's slice of the packed gradient to its view, clips and steps it
exactly as :func:`lab.step.train_step` does after its last micro-batch, so a member's update is the
solo run's update. :meth:`Group.train_step` is one full step of every member (what ``lab.bench``
times); the pack's trainer (:mod:`lab.pack.train`) steps only the members whose batch is complete.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from lab.config import TrainConfig
from lab.hardware import autocast
from lab.pack.model import PackedTransformer
from lab.step import make_optimizer


@dataclass
class Hardware:
    """Where a pack runs: device, autocast dtype (None: fp32), and whether the forward is compiled."""

    device: torch.device
    dtype: torch.dtype | None = None
    use_compile: bool = False


class Group:
    """The packed model, each member's solo view and optimizer, and the forward; rebuilt smaller when
    members leave (:meth:`select`)."""

    def __init__(self, model: PackedTransformer, trains: list[TrainConfig], hw: Hardware,
                 optim_states: list[dict] | None = None):
        self.model, self.trains, self.hw = model, trains, hw
        self.views = [model.member_view(k) for k in range(model.members)]
        self.opts = [make_optimizer(v, t) for v, t in zip(self.views, trains)]
        self.params = list(model.parameters())  # named_parameters order, a tied weight once
        packed = {solo: p for (_, p), solo in zip(model.named_parameters(), model.solo_names().values())}
        # (packed parameter, member k's view of it) in the solo model's order (clipping sums in it)
        self._pairs = [[(packed[n], vp) for n, vp in v.named_parameters()] for v in self.views]
        for opt, st in zip(self.opts, optim_states or []):
            if st is not None:
                opt.load_state_dict(st)
        self.fwd = torch.compile(model) if hw.use_compile else model

    def select(self, members: list[int], copy_state: bool = False) -> "Group":
        """A group of the listed members (copies of their weights; optimizer state moved, or copied)."""
        states = [self.opts[k].state_dict() for k in members]
        if copy_state:
            states = copy.deepcopy(states)
        grads = {n: p.grad for n, p in self.model.named_parameters()}
        out = Group(self.model.select(members), [self.trains[k] for k in members], self.hw, states)
        idx = torch.tensor(members, device=self.hw.device)
        for n, p in out.model.named_parameters():  # members mid-batch keep what they accumulated
            if grads[n] is not None:
                p.grad = grads[n].index_select(0, idx)
        return out

    def step(self, k: int, lr: float) -> float:
        """Member k's optimizer step at ``lr``: clip and step, as :func:`lab.step.train_step` does
        after its last micro-batch; returns the pre-clip gradient norm."""
        opt, clip, pairs = self.opts[k], self.trains[k].grad_clip, self._pairs[k]
        for p, vp in pairs:
            vp.grad = p.grad[k]
        gnorm = torch.nn.utils.clip_grad_norm_([vp for _, vp in pairs], clip if clip > 0 else float("inf"))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        for _, vp in pairs:
            vp.grad = None
        return float(gnorm)

    def zero_grad(self, members: list[int]) -> None:
        """Clear the listed members' accumulated gradients (they just stepped)."""
        for p in self.params:
            if p.grad is None:
                continue
            if len(members) == self.model.members:
                p.grad = None
            else:
                p.grad[members] = 0.0

    def train_step(self, x: torch.Tensor, y: torch.Tensor, lrs: list[float]) -> torch.Tensor:
        """One full step of every member on its micro-batch ``x[k]``, ``y[k]`` (K, B, T); the losses."""
        with autocast(self.hw.device, self.hw.dtype):
            losses = self.fwd(x, y)
        losses.sum().backward()
        for k, lr in enumerate(lrs):
            self.step(k, lr)
        self.zero_grad(list(range(self.model.members)))
        return losses.detach()
