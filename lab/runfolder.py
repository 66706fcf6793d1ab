"""The run folder, written alike by solo runs (:mod:`lab.train`) and packed ones (:mod:`lab.pack.train`).

A run folder holds ``config.yaml`` (the config and what the plan derived), ``metrics.jsonl`` (one row
per logged step), ``cooldowns.jsonl`` (one row per WSD cooldown branch), ``ckpt.pt`` (the latest
checkpoint) and ``result.json`` (the record). Everything that decides what goes into those files
lives here once, so the tables, fits and resume cannot tell which kind of run wrote a folder.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lab.checkpoint import UnreadableCheckpoint, load_checkpoint, set_aside, truncate_jsonl
from lab.config import RunConfig
from lab.io import read_json
from lab.plan import RunPlan

PROGRESS_EVERY_S = 5.0  # a progress line at most this often (and at every evaluation)
HOLD_ENV = "LAB_TEST_HOLD_AFTER_CKPT"  # test hook: see hold_after_checkpoint
HOLD_MAX_S = 300.0


def fresh_state() -> dict[str, Any]:
    """The loop's accumulators before the first step (what a checkpoint's ``state`` holds)."""
    return {"step": 0, "elapsed": 0.0, "initial_loss": None, "win_loss": 0.0, "win_n": 0, "resumes": 0,
            "gns_G2": None, "gns_S": None}


def completed_record(run_dir: Path) -> dict[str, Any] | None:
    """The record of a completed run in ``run_dir``, else None (a damaged record is not a completed one)."""
    try:
        prev = read_json(run_dir / "result.json")
    except (OSError, ValueError):
        return None
    return prev if isinstance(prev, dict) and prev.get("status") == "completed" else None


def write_config(cfg: RunConfig, plan: RunPlan, run_dir: Path) -> None:
    """``config.yaml``: the resolved config and the plan's derived numbers."""
    from omegaconf import OmegaConf

    from lab.io import atomic_write_text

    doc = {"config": asdict(cfg), "derived": plan.derived()}
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(doc)))


def readable_checkpoint(path: Path, strict: bool = False) -> dict[str, Any] | None:
    """The checkpoint at ``path``, loaded safely; an unreadable one is set aside (kept) and None
    returned, so the run starts over. ``strict`` (several processes share the run): raise instead."""
    try:
        return load_checkpoint(path)
    except UnreadableCheckpoint as e:
        if strict:
            raise ValueError(f"checkpoint {e}; move it away (or delete it) to start the run over") from None
        moved = set_aside(path)
        warn(f"[train] checkpoint unreadable ({e}); kept as {moved.name}; starting the run over from step 0")
        return None


def check_same_corpus(cfg: RunConfig, ckpt: dict[str, Any], fingerprint: Any, ckpt_path: Path) -> None:
    """Refuse to resume on data that changed since the checkpoint (files added to a user corpus, say)."""
    was = ckpt.get("corpus")
    if was is not None and was != fingerprint:
        raise ValueError(f"data.corpus: {cfg.data.corpus!r} changed since {ckpt_path} was written (fingerprint "
                         f"{was} -> {fingerprint}); resuming would continue on different data. Restore the corpus, "
                         f"or delete {ckpt_path} to start the run over")


def cut_back_line_files(run_dir: Path, step: int) -> None:
    """On resume: drop the metrics and cooldown rows after the checkpoint's step (they run again)."""
    bad = truncate_jsonl(run_dir / "metrics.jsonl", step) + truncate_jsonl(
        run_dir / "cooldowns.jsonl", step, key="branch_start")
    if bad:
        warn(f"[train] dropped {bad} torn or garbage line(s) from metrics.jsonl/cooldowns.jsonl in {run_dir} "
             "(a kill mid-write); the steps after the checkpoint run again")


def start_line_files(run_dir: Path) -> None:
    """A run that died before its first checkpoint starts over: its old rows go."""
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    (run_dir / "cooldowns.jsonl").unlink(missing_ok=True)


def metrics_row(cfg: RunConfig, plan: RunPlan, state: dict[str, Any], last: dict[str, Any], done: int,
                elapsed: float, tokens_per_s: float) -> dict[str, Any]:
    """One ``metrics.jsonl`` row at step ``done``: the window's mean loss (the window is reset),
    LR, grad norm, throughput, and the GNS estimate when measured. Evaluations are added by the caller."""
    t, B = cfg.train, cfg.train.batch_tokens
    row = {
        "step": done,
        "tokens": float(done * B),
        "flops": float(done * B) * plan.flops_per_token,
        "loss": state["win_loss"] / state["win_n"],
        **({"gns_B_noise": state["gns_S"] / state["gns_G2"] if state["gns_G2"] else float("nan")}
           if t.gns else {}),
        "lr": last["lr"],
        "grad_norm": last["grad_norm"],
        "tokens_per_s": tokens_per_s,
        "elapsed_s": elapsed,
    }
    state["win_loss"], state["win_n"] = 0.0, 0
    return row


def eval_due(plan: RunPlan, done: int) -> bool:
    return done % plan.eval_every == 0 or done == plan.steps


def cooldown_row(plan: RunPlan, batch_tokens: int, start: int, end: int, ev: dict[str, float]) -> dict[str, Any]:
    """The ``cooldowns.jsonl`` row of a branch from step ``start`` to ``end`` (its compute recorded apart)."""
    tokens = float(end * batch_tokens)
    return {"branch_start": start, "step": end, "tokens": tokens, "flops": tokens * plan.flops_per_token,
            "branch_flops": (end - start) * batch_tokens * plan.flops_per_token, **ev}


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def hold_after_checkpoint(state: dict) -> bool:
    """Test hook: while the file named by ``$LAB_TEST_HOLD_AFTER_CKPT`` exists, a run that has not
    resumed yet waits after each checkpoint (up to HOLD_MAX_S).

    Tests that kill, cancel or preempt a run mid-way use it so the signal lands while the run is
    between a checkpoint and its end, however fast the machine. A resumed run never holds. Unset: no-op.
    """
    path = os.environ.get(HOLD_ENV)
    if not path or state["resumes"] > 0 or not os.path.exists(path):
        return False
    deadline = time.time() + HOLD_MAX_S
    while os.path.exists(path) and time.time() < deadline:
        time.sleep(0.05)
    return True


def print_progress(row: dict[str, Any], steps: int, elapsed: float, fpt: float, prefix: str = "") -> None:
    """One progress line from a metrics row."""
    eta = elapsed / row["step"] * (steps - row["step"])
    val = f" | val {row['loss_val']:.4f} ({row['bpb_val']:.3f} bpb)" if "loss_val" in row else ""
    print(
        f"  {prefix}step {row['step']:>6d}/{steps} | loss {row['loss']:.4f} | lr {row['lr']:.2e} | "
        f"{row['tokens_per_s'] / 1e3:7.1f}k tok/s {row['tokens_per_s'] * fpt / 1e9:6.1f} GFLOP/s | "
        f"eta {eta:5.0f}s{val}",
        flush=True,
    )


def finish_message(result: dict[str, Any], wall_s: float, run_dir: Path) -> str:
    return (f"[train] {result['status']}: loss_val={result['loss_val']:.4f} nats/token, "
            f"bpb_val={result['bpb_val']:.4f} | {result['tokens_per_s']:,.0f} tok/s, "
            f"{result['flops_per_s'] / 1e9:.1f} GFLOP/s | {wall_s:.1f}s -> {run_dir}")


def warn(msg: str) -> None:
    """Something the user must see (progress off or not): stderr, rank 0."""
    if int(os.environ.get("RANK", 0)) == 0:
        print(msg, file=sys.stderr, flush=True)


def say(cfg: RunConfig, msg: str) -> None:
    """A progress message, when the run's progress output is on (rank 0)."""
    if cfg.train.progress and int(os.environ.get("RANK", 0)) == 0:
        print(msg, flush=True)
