"""Learning-rate schedules as multipliers of the peak LR, a pure function of the step.

* ``cosine``: linear warmup, then cosine decay to ``min_lr_ratio`` at the last step.
* ``wsd``: warmup-stable-decay (Hu et al. 2024, MiniCPM, arXiv:2404.06395): linear warmup, constant,
  then a final decay over ``decay`` of the steps; ``sqrt`` decays as 1 - sqrt(progress), the shape
  Hägele et al. (2024, arXiv:2405.18392) found to match cosine; ``linear`` and ``cosine`` shapes too.
* ``constant``: linear warmup, then constant.

Warmup is a fraction of the run when < 1, otherwise a number of steps.
"""

from __future__ import annotations

import math


def check_warmup(warmup: float, steps: int, batch_tokens: int) -> None:
    """Refuse a warmup given in steps that is not shorter than the run: its LR would never decay."""
    if warmup >= 1 and warmup >= steps:
        raise ValueError(f"train.warmup: {warmup:g} steps is not shorter than the run's {steps} steps "
                         f"(D={steps * batch_tokens:.4g} tokens / B={batch_tokens}); give a fraction "
                         f"(e.g. train.warmup=0.1) or fewer steps")


def warmup_steps(warmup: float, total: int) -> int:
    w = int(round(warmup * total)) if warmup < 1 else int(warmup)
    return max(0, min(w, total - 1))


def decay_curve(progress: float, shape: str) -> float:
    """Fraction of the way from 1 down to the floor after ``progress`` in [0, 1] of the decay."""
    progress = min(max(progress, 0.0), 1.0)
    if shape == "linear":
        return progress
    if shape == "sqrt":
        return math.sqrt(progress)
    if shape == "cosine":
        return 0.5 * (1 - math.cos(math.pi * progress))
    raise ValueError(f"train.decay_shape: {shape!r} is not one of linear, sqrt, cosine")


def lr_multiplier(
    step: int,
    total: int,
    schedule: str,
    warmup: float = 0.0,
    min_lr_ratio: float = 0.1,
    decay: float = 0.2,
    decay_shape: str = "sqrt",
) -> float:
    """LR / peak LR at 0-based ``step`` of a ``total``-step run."""
    w = warmup_steps(warmup, total)
    if step < w:
        return (step + 1) / (w + 1)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        p = (step - w) / max(1, total - 1 - w)
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - decay_curve(p, "cosine"))
    if schedule == "wsd":
        n_decay = max(1, int(round(decay * total)))
        start = max(w, total - n_decay)
        if step < start:
            return 1.0
        p = (step - start + 1) / max(1, total - start)
        return 1.0 - (1 - min_lr_ratio) * decay_curve(p, decay_shape)
    raise ValueError(f"train.schedule: {schedule!r} is not one of cosine, wsd, constant")
