"""Optional metric streams beside ``metrics.jsonl``: TensorBoard and Weights & Biases.

Neither is required: the run folder's own records are the source of truth and what the tables
read. A user turns a stream on with ``train.tensorboard=true`` (event files in
``<run_dir>/tensorboard``; needs ``pip install tensorboard``) or ``train.wandb=true`` (``offline``
mode by default, files in ``<run_dir>/wandb``, synced later with ``wandb sync`` if wanted; needs
``pip install wandb``). Each logged row's numeric fields are sent at its step.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

WANDB_MODES = ("offline", "online", "disabled")


class Trackers:
    """Fan-out of metric rows to the enabled streams; a no-op when none is enabled."""

    def __init__(self, cfg: Any, run_dir: Path, config: dict[str, Any]):
        t = cfg.train
        self._tb = self._wb = None
        if t.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError("train.tensorboard=true needs the tensorboard package: pip install tensorboard") from e
            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if t.wandb:
            if t.wandb_mode not in WANDB_MODES:
                raise ValueError(f"train.wandb_mode: {t.wandb_mode!r} is not one of {', '.join(WANDB_MODES)}")
            try:
                import wandb
            except ImportError as e:
                raise ValueError("train.wandb=true needs the wandb package: pip install wandb") from e
            os.environ.setdefault("WANDB_SILENT", "true")
            self._wb = wandb.init(
                mode=t.wandb_mode, dir=str(run_dir), project=t.wandb_project, name=Path(run_dir).name,
                config=config, resume="allow", id=_stable_id(run_dir),
            )

    def log(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        nums = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and k != "step" and math.isfinite(v)}
        if self._tb is not None:
            for k, v in nums.items():
                self._tb.add_scalar(k, v, step)
        if self._wb is not None:
            self._wb.log(nums, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wb is not None:
            self._wb.finish()


def _stable_id(run_dir: Path) -> str:
    """One W&B run id per run folder, so a resumed run continues its own W&B run."""
    import hashlib

    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
