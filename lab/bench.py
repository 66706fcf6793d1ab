"""Benchmark: training tokens/s and achieved FLOP/s of the trainer against the machine's peak.

``python -m lab.bench [--quick] [--seconds S] [--out FILE.json]``

For a ladder of proxy shapes (~30k to ~25M non-embedding parameters, byte vocabulary, seq 256)
it times the trainer's own :func:`lab.train.train_step` (forward, backward, clip, fused AdamW) on
random tokens, and reports

* one process using all threads, and one 1-thread worker per core running at once (the local
  sweep layout; aggregate throughput),
* fp32 and bf16 autocast,
* on a CUDA device too when one exists,

beside the dense matmul peak measured in the same run with the same thread count and dtype. MFU
= achieved FLOP/s (the lab's convention, :func:`lab.counting.flops_per_token`) / that peak; the
worker layout is compared with the all-thread peak, since together the workers own every core.
Results print as a table and are written as JSON for tracking over time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lab.config import TrainConfig
from lab.counting import Shape, counts, resolve_shape

SEQ_LEN = 256
VOCAB = 256
# (num_layers, d_model, num_heads, micro-batch in sequences): ~30k .. ~25M non-embedding params.
LADDER = [
    (2, 32, 2, 16),
    (2, 64, 2, 16),
    (3, 128, 4, 16),
    (4, 192, 3, 16),
    (6, 320, 5, 8),
    (8, 512, 8, 8),
]
QUICK = [LADDER[1], LADDER[2], LADDER[3]]


@dataclass
class Case:
    shape: Shape
    micro: int
    dtype: str  # "float32" | "bfloat16"
    device: str = "cpu"


def ladder_shapes(quick: bool) -> list[tuple[Shape, int]]:
    out = []
    for layers, d, heads, micro in QUICK if quick else LADDER:
        s = resolve_shape(vocab_size=VOCAB, seq_len=SEQ_LEN, num_layers=layers, d_model=d, num_heads=heads)
        out.append((s, micro))
    return out


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: str, device: str = "cpu", seconds: float = 1.0) -> float:
    """Best dense matmul FLOP/s over a few square sizes (the denominator of MFU)."""
    dt = getattr(torch, dtype)
    best = 0.0
    sizes = (512, 1024, 2048) if device == "cpu" else (4096, 8192)
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dt)
        b = torch.randn(n, n, device=device).to(dt)
        a @ b
        _sync(device)
        t_end = time.perf_counter() + seconds / len(sizes)
        while True:
            t0 = time.perf_counter()
            a @ b
            _sync(device)
            el = time.perf_counter() - t0
            best = max(best, 2 * n**3 / el)
            if time.perf_counter() > t_end:
                break
    return best


def step_speed(case: Case, seconds: float, threads: int | None = None) -> dict[str, float]:
    """Steady-state tokens/s of :func:`lab.train.train_step` for one shape, dtype, device."""
    from lab.model import Transformer
    from lab.train import make_optimizer, train_step

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device(case.device)
    model = Transformer(case.shape).to(device)
    opt = make_optimizer(model, TrainConfig(lr=1e-4))
    dtype = torch.bfloat16 if case.dtype == "bfloat16" else None
    fwd = torch.compile(model) if case.device == "cuda" else model
    x = torch.randint(0, VOCAB, (case.micro, SEQ_LEN + 1))
    batch = [(x[:, :-1], x[:, 1:])]
    for _ in range(2):  # warm up (allocator, kernels, compile)
        train_step(fwd, model, opt, iter(batch), 1, device, dtype, 1.0)
    _sync(case.device)
    n, t0 = 0, time.perf_counter()
    while True:
        train_step(fwd, model, opt, iter(batch), 1, device, dtype, 1.0)
        n += 1
        _sync(case.device)
        el = time.perf_counter() - t0
        if el >= seconds and n >= 3:
            break
    tps = n * case.micro * SEQ_LEN / el
    return {"tokens_per_s": tps, "flops_per_s": tps * counts(case.shape)["flops_per_token"], "steps": n}


def _worker(case: Case, seconds: float, barrier: Any, q: Any) -> None:
    torch.set_num_threads(1)
    barrier.wait()
    q.put(step_speed(case, seconds, threads=1))


def workers_speed(case: Case, seconds: float, n_workers: int) -> dict[str, float]:
    """Aggregate throughput of ``n_workers`` 1-thread processes training at the same time."""
    ctx = mp.get_context("spawn")
    q, barrier = ctx.Queue(), ctx.Barrier(n_workers)
    procs = [ctx.Process(target=_worker, args=(case, seconds, barrier, q)) for _ in range(n_workers)]
    for p in procs:
        p.start()
    res = [q.get() for _ in procs]
    for p in procs:
        p.join()
    return {k: sum(r[k] for r in res) for k in ("tokens_per_s", "flops_per_s")}


def run(quick: bool, seconds: float, dtypes: list[str], layouts: list[str]) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    peaks = {dt: matmul_peak(dt) for dt in dtypes}
    rows = []
    for shape, micro in ladder_shapes(quick):
        c = counts(shape)
        for dt in dtypes:
            case = Case(shape, micro, dt)
            for layout in layouts:
                r = step_speed(case, seconds, threads) if layout == "process" else workers_speed(case, seconds, cores)
                rows.append(
                    {
                        "device": "cpu",
                        "layout": "1 process x %d threads" % threads if layout == "process" else f"{cores} workers x 1 thread",
                        "dtype": dt,
                        "params": c["params"],
                        "params_total": c["params_total"],
                        "shape": f"L{shape.num_layers} d{shape.d_model} h{shape.num_heads}",
                        "micro_batch": micro,
                        **r,
                        "mfu": r["flops_per_s"] / peaks[dt],
                    }
                )
                _print_row(rows[-1])
    gpu = {}
    if torch.cuda.is_available():
        gpu_peak = matmul_peak("bfloat16", "cuda")
        gpu = {"name": torch.cuda.get_device_name(), "peak_bf16": gpu_peak}
        for shape, micro in ladder_shapes(quick):
            r = step_speed(Case(shape, micro * 8, "bfloat16", "cuda"), seconds)
            rows.append(
                {
                    "device": "cuda", "layout": "1 process", "dtype": "bfloat16", "params": counts(shape)["params"],
                    "params_total": counts(shape)["params_total"], "shape": f"L{shape.num_layers} d{shape.d_model}",
                    "micro_batch": micro * 8, **r, "mfu": r["flops_per_s"] / gpu_peak,
                }
            )
            _print_row(rows[-1])
    return {
        "machine": {"cores": cores, "threads": threads, "torch": torch.__version__, "platform": platform.platform()},
        "peak_flops_per_s": peaks,
        "gpu": gpu,
        "seq_len": SEQ_LEN,
        "vocab_size": VOCAB,
        "rows": rows,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _print_row(r: dict[str, Any]) -> None:
    print(
        f"{r['device']:>4s}  {r['layout']:<24s} {r['dtype']:<8s} {r['shape']:<14s} N={r['params']:>11,}  "
        f"{r['tokens_per_s']:>10,.0f} tok/s  {r['flops_per_s'] / 1e9:7.1f} GFLOP/s  MFU {100 * r['mfu']:5.1f}%",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lab.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="three sizes only (~100k to ~2M params)")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    ap.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--layout", nargs="+", default=["process", "workers"], choices=["process", "workers"])
    ap.add_argument("--out", default=None, help="JSON output (default runs/bench/bench-<time>.json)")
    args = ap.parse_args(argv)
    print(f"[bench] measuring matmul peak and {len(QUICK if args.quick else LADDER)} proxy sizes ...", flush=True)
    res = run(args.quick, args.seconds, args.dtype, args.layout)
    for dt, pk in res["peak_flops_per_s"].items():
        print(f"[bench] matmul peak {dt}: {pk / 1e9:.1f} GFLOP/s ({res['machine']['threads']} threads)")
    out = Path(args.out or f"runs/bench/bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"[bench] wrote {out}")


if __name__ == "__main__":
    main()
