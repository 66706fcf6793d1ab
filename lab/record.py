"""The run's record (``result.json``): what the tables, fits and back-tests read.

:func:`result_record` is the record of a run that ended (completed or diverged), with N, D, C in
the units of :mod:`lab.counting`; :func:`failure_record` is the record of a run that raised, so a
failed run is never lost.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict
from typing import Any

import lab
from lab.config import RunConfig
from lab.plan import RunPlan


def result_record(cfg: RunConfig, plan: RunPlan, run: dict[str, Any], state: dict[str, Any],
                  last: dict[str, Any], hardware: dict[str, Any]) -> dict[str, Any]:
    """The record of a run that ended.

    ``run``: status, error, run_dir, steps done, wall seconds, the corpus' name/tokenizer/vocab and
    the cooldown branches' rows; ``state``: the loop's accumulators (resumes, GNS estimates);
    ``last``: the last step's loss_train, lr and grad_norm, and the last evaluation (``eval``);
    ``hardware``: device, dtype, threads, world_size, parallel, ``pack_members`` (how many runs
    trained in the process, :mod:`lab.pack`; 1 for a solo run) and ``compiled`` (``torch.compile``).
    """
    t, c, B = cfg.train, plan.counts, cfg.train.batch_tokens
    steps, wall, fpt, ev = run["steps"], run["wall_s"], plan.flops_per_token, last["eval"]
    domains = plan.eval_domains
    gns = state.get("gns_S") / state["gns_G2"] if t.gns and state.get("gns_G2") else None
    return {
        "status": run["status"], "error": run["error"], "lab_version": lab.__version__, "run_dir": run["run_dir"],
        "params": c["params"], "params_total": c["params_total"], "param_groups": c["param_groups"],
        "flops_per_token": fpt, "flops_per_token_6n": c["flops_per_token_6n"],
        "flops_per_token_chinchilla": c["flops_per_token_chinchilla"], "shape": plan.shape.to_dict(),
        "steps": steps, "tokens": float(steps * B), "tokens_target": plan.target_tokens,
        "flops": float(steps * B) * fpt, "flops_6nd": 6.0 * c["params"] * steps * B,
        "batch_tokens": B, "batch_seqs": plan.batch_seqs, "micro_batch": plan.micro_batch,
        "grad_accum": plan.grad_accum, "seq_len": cfg.data.seq_len,
        "lr": t.lr, "lr_final": last["lr"], "schedule": t.schedule, "warmup": t.warmup,
        "weight_decay": t.weight_decay, "seed": t.seed, "mixture": plan.mixture, "val_weights": plan.val_weights,
        "corpus": run["corpus"], "tokenizer": run["tokenizer"], "vocab_size": run["vocab_size"],
        "loss_train": last["loss"], "grad_norm": last["grad_norm"],
        "loss_val": ev.get("loss_val", float("nan")), "bpb_val": ev.get("bpb_val", float("nan")),
        "loss_val_domains": {n: ev[f"loss_val_{n}"] for n in domains if f"loss_val_{n}" in ev},
        "bpb_val_domains": {n: ev[f"bpb_val_{n}"] for n in domains if f"bpb_val_{n}" in ev},
        "wall_s": wall, "tokens_per_s": steps * B / max(1e-9, wall), "flops_per_s": steps * B * fpt / max(1e-9, wall),
        "device": hardware["device"], "dtype": hardware["dtype"], "threads": hardware["threads"],
        "resumes": state["resumes"], "gns_B_noise": gns, "cooldowns": run["cooldowns"],
        "world_size": hardware["world_size"], "parallel": hardware["parallel"],
        "pack_members": hardware.get("pack_members", 1), "compiled": hardware.get("compiled", False),
        "recipe": cfg.recipe,
        "recipe_sha256": run.get("recipe_sha256"), "corpus_fingerprint": run.get("corpus_fingerprint"), "tags": cfg.tags,
    }


def failure_record(cfg: RunConfig, error: BaseException, started: float) -> dict[str, Any]:
    """The record of a run that raised: the error, its traceback and the config (call inside ``except``)."""
    return {
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
        "traceback": traceback.format_exc(),
        "config": asdict(cfg),
        "lab_version": lab.__version__,
        "wall_s": time.time() - started,
    }
