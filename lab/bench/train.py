"""Benchmark: training tokens/s and achieved FLOP/s of the trainer against the machine's peak.

``python -m lab.bench [--quick] [--packed K] [--micro SEQS] [--seconds S] [--impl ...] [--out FILE.json]``

For a ladder of proxy shapes (~30k to ~25M non-embedding parameters, byte vocabulary, seq 256)
it times the trainer's own :func:`lab.step.train_step` (forward, backward, clip, fused AdamW) on
random tokens, interleaved step by step with baselines measured in the same run:

* ``hf``: Hugging Face transformers' ``LlamaForCausalLM`` at the same shape and parameter count (SDPA
  attention, the same loss, clipping and fused AdamW): a real, widely used implementation
  (``speedup_vs_hf_llama``); skipped, with the reason, when transformers is not installed;
* ``prototype``: a plain LLaMA-style prototype of the same shape (:mod:`lab.bench.prototype`,
  ``speedup_vs_prototype``);
* with ``--packed K``, ``packed``: K proxies of the shape trained as one pack
  (:class:`lab.pack.step.Group`: one batched forward and backward, each member's own clip and AdamW),
  its aggregate tokens/s against the solo trainer's in the same rotation (``speedup_vs_solo``);
* with ``--impl ... lab+compile`` (or ``packed+compile``), the same under ``torch.compile``.

It reports

* one process using all threads, and one 1-thread worker per core running at once (the local
  sweep layout; aggregate throughput),
* fp32 and bf16 autocast,
* on a CUDA device too when one exists,

beside the dense matmul peak measured in the same run, per dtype, for *both* layouts: one process
with all threads, and one 1-thread process per core running concurrently (their sum). The two can
differ a lot (BLAS often scales poorly across threads); the *machine peak* is the larger of the
two, and every row's MFU = achieved FLOP/s (the lab's convention,
:func:`lab.counting.flops_per_token`) / that machine peak, so the layouts are compared on one
scale. ``mfu_window`` divides instead by this layout's matmul rate measured in the same window,
interleaved with the training steps (the machine's speed drifts by tens of percent over minutes;
the same-window ratio does not). ``mfu_palm`` is the same throughput counted in the PaLM convention
(:func:`lab.counting.flops_per_token_palm`, full attention), the one most published MFU figures
use. ``mfu_layout`` (the same throughput over its own layout's peak) is kept in the JSON too.
Peaks are sustained rates (FLOPs done / time over a window), not a best single call. Workers are
plain subprocesses synchronised through pipes (no multiprocessing semaphores to leak). Results
print as a table and are written as JSON for tracking over time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lab.config import TrainConfig
from lab.counting import Shape, counts, flops_per_token_palm, resolve_shape

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


IMPLS = ("prototype", "lab", "lab+compile", "hf", "packed", "packed+compile")


class Skip(Exception):
    """An implementation that cannot be timed here (the message says why)."""


@dataclass
class Case:
    shape: Shape
    micro: int
    dtype: str  # "float32" | "bfloat16"
    device: str = "cpu"
    members: int = 1  # the packed implementations' K

    def sequences(self, impl: str) -> int:
        """Sequences one step of ``impl`` trains: micro for one model, K x micro for a pack."""
        return self.micro * (self.members if impl.startswith("packed") else 1)


def ladder_shapes(quick: bool, micro: int | None = None) -> list[tuple[Shape, int]]:
    """The ladder's (shape, micro-batch in sequences); ``micro`` replaces every shape's micro-batch."""
    out = []
    for layers, d, heads, m in QUICK if quick else LADDER:
        s = resolve_shape(vocab_size=VOCAB, seq_len=SEQ_LEN, num_layers=layers, d_model=d, num_heads=heads)
        out.append((s, micro or m))
    return out


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: str, device: str = "cpu", seconds: float = 1.0, go: Any = None) -> float:
    """Sustained dense matmul FLOP/s, the best over a few square sizes (the denominator of MFU).

    Each size runs back-to-back for ``seconds / len(sizes)``; its rate is total FLOPs / elapsed.
    ``go`` (workers only) is called before each size so concurrent workers run each size together.
    """
    dt = getattr(torch, dtype)
    best = 0.0
    sizes = (1024, 2048) if device == "cpu" else (4096, 8192)
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dt)
        b = torch.randn(n, n, device=device).to(dt)
        c = a @ b
        _sync(device)
        if go is not None:
            go()
        reps, t0 = 0, time.perf_counter()
        while True:
            torch.matmul(a, b, out=c)
            reps += 1
            _sync(device)
            el = time.perf_counter() - t0
            if el >= seconds / len(sizes):
                break
        best = max(best, 2 * n**3 * reps / el)
    return best


def _stepper(impl: str, case: Case) -> Any:
    """A zero-argument function doing one training step of ``impl`` on a fixed random batch; raises
    :class:`Skip` when ``impl`` cannot run here."""
    from lab.bench.prototype import PrototypeLM, prototype_optimizer, prototype_step
    from lab.hardware import keep_freed_memory
    from lab.model import Transformer
    from lab.step import make_optimizer, train_step

    torch.manual_seed(0)
    device = torch.device(case.device)
    x = torch.randint(0, case.shape.vocab_size, (case.sequences(impl), case.shape.seq_len + 1), device=device)
    inp, tgt = x[:, :-1], x[:, 1:]
    dtype = torch.bfloat16 if case.dtype == "bfloat16" else None
    keep_freed_memory()  # the allocator setting the trainer makes, for every implementation alike
    if impl == "prototype":
        proto = PrototypeLM(case.shape).to(device)
        popt = prototype_optimizer(proto)
        return lambda: prototype_step(proto, popt, inp, tgt, dtype)
    if impl == "hf":
        return _hf_stepper(case, inp, tgt, dtype)
    if impl.startswith("packed"):
        return _packed_stepper(case, impl, inp, tgt, dtype)
    model = Transformer(case.shape).to(device)
    opt = make_optimizer(model, TrainConfig(lr=1e-4))
    fwd = torch.compile(model) if impl == "lab+compile" else model
    return lambda: train_step(fwd, model, opt, iter([(inp, tgt)]), 1, device, dtype, 1.0)


def _packed_stepper(case: Case, impl: str, inp: torch.Tensor, tgt: torch.Tensor, dtype: torch.dtype | None) -> Any:
    """One step of K members of the shape as one pack (each member its own micro-batch and AdamW)."""
    from lab.pack.model import PackedTransformer
    from lab.pack.step import Group, Hardware

    K, device = case.members, torch.device(case.device)
    model = PackedTransformer.from_seeds(case.shape, list(range(K))).to(device)
    group = Group(model, [TrainConfig(lr=1e-4)] * K, Hardware(device, dtype, impl == "packed+compile"))
    x, y = inp.view(K, case.micro, -1), tgt.reshape(K, case.micro, -1)
    lrs = [1e-4] * K
    return lambda: group.train_step(x, y, lrs)


def hf_config(shape: Shape) -> Any:
    """transformers' ``LlamaConfig`` of a lab shape: the same parameters, RMSNorm eps, RoPE theta,
    SwiGLU width, grouped-query heads and (un)tied embeddings; SDPA attention."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        vocab_size=shape.vocab_size, hidden_size=shape.d_model, intermediate_size=shape.d_ff,
        num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads, head_dim=shape.head_dim, max_position_embeddings=shape.seq_len,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=shape.tie_embeddings, attention_bias=False,
        mlp_bias=False,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


def _hf_stepper(case: Case, inp: torch.Tensor, tgt: torch.Tensor, dtype: torch.dtype | None) -> Any:
    """One step of transformers' LlamaForCausalLM: forward, the lab's loss, backward, clip, fused AdamW."""
    try:
        from transformers import LlamaForCausalLM
    except ImportError as e:
        raise Skip(f"transformers is not installed ({e}); pip install transformers to time it") from None
    from lab.step import make_optimizer

    device = torch.device(case.device)
    model = LlamaForCausalLM(hf_config(case.shape)).to(device)
    model.train()
    opt = make_optimizer(_AllDecay(model), TrainConfig(lr=1e-4))

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(input_ids=inp).logits
            loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]), tgt.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


class _AllDecay:
    """:func:`lab.step.make_optimizer` for a non-lab model: decay matrices and embeddings, not gains."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        params = list(self.model.parameters())
        return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def _matmul_stepper(case: Case) -> Any:
    """The window's peak probe: a "step" of dense square matmuls in the case's dtype.

    fp32 on CPU: one 2048^3 product (the faster of :func:`matmul_peak`'s two sizes here, ~0.3 s
    on one core); other dtypes four 1024^3 products (CPU bf16 without native support is ~100x
    slower, and 2048 would make one probe step last tens of seconds)."""
    n, reps = (2048, 1) if (case.dtype == "float32" and case.device == "cpu") else (1024, 4)
    dt = getattr(torch, case.dtype)
    a, b = (torch.randn(n, n, device=case.device).to(dt) for _ in range(2))
    c = a @ b

    def step() -> None:
        for _ in range(reps):
            torch.matmul(a, b, out=c)

    step.flops = 2.0 * n**3 * reps  # type: ignore[attr-defined]
    return step


def step_speeds(
    case: Case, impls: list[str], seconds: float, threads: int | None = None, go: Any = None,
    window_peak: bool = False,
) -> dict[str, dict[str, float]]:
    """Steady-state tokens/s of each implementation in ``impls`` for one shape, dtype, device.

    The implementations' steps are *interleaved* (one step of each in turn, each step timed on its
    own) for ``seconds`` per implementation, so a slow spell of a shared machine hits all of them
    alike and their ratio is steadier than back-to-back timings. ``lab`` times the trainer's own
    :func:`lab.step.train_step`; ``prototype`` the plain proxy of :mod:`lab.bench.prototype`;
    ``lab+compile`` the trainer with ``torch.compile`` (compile time excluded: it is paid in the
    warm-up steps). With ``window_peak`` a dense-matmul probe joins the rotation (key
    ``matmul``, FLOP/s only): the peak of the very window the steps ran in, so a shared machine's
    drift over minutes (measured here: the peak moved between 102 and 137 GFLOP/s within an hour)
    does not leak into the MFU.
    """
    if threads:
        torch.set_num_threads(threads)
    steps, skipped = {}, {}
    for impl in impls:
        try:
            steps[impl] = _stepper(impl, case)
        except Skip as e:
            skipped[impl] = str(e)
    if window_peak:
        steps["matmul"] = _matmul_stepper(case)
    if not steps:
        return {}
    for step in steps.values():  # warm up (allocator, kernels, compile)
        for _ in range(2):
            step()
    _sync(case.device)
    if go is not None:
        go()
    spent = {impl: 0.0 for impl in steps}
    done = {impl: 0 for impl in steps}
    t_end = time.perf_counter() + seconds * len(steps)
    while time.perf_counter() < t_end or min(done.values()) < 3:
        for impl, step in steps.items():
            t0 = time.perf_counter()
            step()
            _sync(case.device)
            spent[impl] += time.perf_counter() - t0
            done[impl] += 1
    fpt = counts(case.shape)["flops_per_token"]
    out: dict[str, dict[str, Any]] = {}
    for impl in impls:
        if impl in skipped:
            out[impl] = {"skipped": skipped[impl]}
            continue
        tps = done[impl] * case.sequences(impl) * case.shape.seq_len / spent[impl]
        out[impl] = {"tokens_per_s": tps, "flops_per_s": tps * fpt, "steps": done[impl]}
    if window_peak:
        out["matmul"] = {"flops_per_s": done["matmul"] * steps["matmul"].flops / spent["matmul"]}
    return out


# ---- workers: 1-thread subprocesses, started together through a pipe handshake ----------------


def _worker_main() -> None:
    """Entry of one 1-thread worker (``python -m lab.bench --_worker``): JSON job on stdin.

    Protocol: the parent writes one JSON line; before each timed section the worker prints
    ``ready`` and waits for a ``go`` line, so all workers time the same window; the result is the
    last stdout line (JSON).
    """
    torch.set_num_threads(1)
    job = json.loads(sys.stdin.readline())

    def go() -> None:
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("bench worker: expected 'go'")

    if job["kind"] == "peak":
        res: Any = matmul_peak(job["dtype"], seconds=job["seconds"], go=go)
    else:
        shape = Shape(**job["shape"])
        res = step_speeds(Case(shape, job["micro"], job["dtype"], members=job.get("members", 1)), job["impls"],
                          job["seconds"], threads=1, go=go, window_peak=True)
    print(json.dumps(res), flush=True)


def _run_workers(job: dict[str, Any], n_workers: int, rounds: int) -> list[Any]:
    """Run ``n_workers`` concurrent 1-thread workers on ``job``; release each of ``rounds`` timed
    sections only when every worker is ready. Returns each worker's JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lab.bench", "--_worker"]
    procs = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(n_workers)
    ]
    try:
        for p in procs:
            p.stdin.write(json.dumps(job) + "\n")
            p.stdin.flush()
        for _ in range(rounds):
            for p in procs:
                line = p.stdout.readline().strip()
                if line != "ready":
                    raise RuntimeError(f"bench worker failed (said {line!r}); see its stderr above")
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
        out = [json.loads(p.stdout.readline()) for p in procs]
        for p in procs:
            p.stdin.close()
            if p.wait() != 0:
                raise RuntimeError(f"bench worker exited with {p.returncode}")
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def workers_peak(dtype: str, n_workers: int, seconds: float = 1.0) -> float:
    """Summed sustained matmul FLOP/s of ``n_workers`` concurrent 1-thread processes.

    Sum of each worker's best size; sizes run in lockstep, so this is the concurrent rate."""
    return float(sum(_run_workers({"kind": "peak", "dtype": dtype, "seconds": seconds}, n_workers, rounds=2)))


def workers_speeds(case: Case, impls: list[str], seconds: float, n_workers: int) -> dict[str, dict[str, float]]:
    """Aggregate throughput of ``n_workers`` 1-thread processes training at the same time.

    Each worker runs :func:`step_speeds`' rotation; workers start together but are not in step
    after that, so while one times a ``lab`` step its neighbours may run a prototype step or the
    matmul probe. The per-implementation sums therefore describe the cores busy with a mix of the
    same kind of work (close to, not exactly, all workers running one implementation), and the
    summed ``matmul`` rate is the cores' matmul rate under that mix, not :func:`workers_peak`.
    """
    job = {
        "kind": "step", "shape": case.shape.to_dict(), "micro": case.micro, "dtype": case.dtype,
        "impls": impls, "seconds": seconds, "members": case.members,
    }
    res = _run_workers(job, n_workers, rounds=1)
    out: dict[str, dict[str, Any]] = {}
    for i in impls:
        skipped = [r[i]["skipped"] for r in res if "skipped" in r[i]]
        out[i] = {"skipped": skipped[0]} if skipped else \
            {k: sum(r[i][k] for r in res) for k in ("tokens_per_s", "flops_per_s")}
    out["matmul"] = {"flops_per_s": sum(r["matmul"]["flops_per_s"] for r in res)}
    return out


LAYOUT_NAMES = {"process": "1 process x {threads} threads", "workers": "{cores} workers x 1 thread"}


def run(
    quick: bool, seconds: float, dtypes: list[str], layouts: list[str], impls: list[str], members: int = 1,
    micro: int | None = None,
) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    names = {k: v.format(threads=threads, cores=cores) for k, v in LAYOUT_NAMES.items()}
    # both layouts' peaks are always measured: the machine peak is the larger, whatever is timed
    peaks: dict[str, dict[str, float]] = {}
    for dt in dtypes:
        p = {"process": matmul_peak(dt, seconds=2.0), "workers": workers_peak(dt, cores, seconds=2.0)}
        best = max(p, key=p.get)
        peaks[dt] = {**p, "machine": p[best], "machine_from": best}
        print(
            f"[bench] matmul peak {dt}: {names['process']} {p['process'] / 1e9:.1f} GFLOP/s, "
            f"{names['workers']} {p['workers'] / 1e9:.1f} GFLOP/s -> machine peak {p[best] / 1e9:.1f} "
            f"({names[best]})",
            flush=True,
        )
    rows, skipped = [], {}
    for shape, m in ladder_shapes(quick, micro):
        for dt in dtypes:
            case = Case(shape, m, dt, members=members)
            for layout in layouts:
                r = step_speeds(case, impls, seconds, threads, window_peak=True) if layout == "process" \
                    else workers_speeds(case, impls, seconds, cores)
                skipped.update({i: r[i]["skipped"] for i in impls if "skipped" in r[i]})
                rows += _rows(r, impls, "cpu", names[layout], dt, shape, m, peaks[dt]["machine"], peaks[dt][layout],
                              members)
    gpu = {}
    if torch.cuda.is_available():
        gpu_peak = matmul_peak("bfloat16", "cuda")
        gpu = {"name": torch.cuda.get_device_name(), "peak_bf16": gpu_peak}
        # the trainer compiles on a GPU by default (train.compile=auto), so its row is always timed
        gpu_impls = list(dict.fromkeys([*impls, "lab+compile"]))
        for shape, m in ladder_shapes(quick, micro):
            r = step_speeds(Case(shape, m * 8, "bfloat16", "cuda", members=members), gpu_impls, seconds)
            rows += _rows(r, gpu_impls, "cuda", "1 process", "bfloat16", shape, m * 8, gpu_peak, gpu_peak, members)
    return {
        "machine": {"cores": cores, "threads": threads, "torch": torch.__version__, "platform": platform.platform()},
        "peak_flops_per_s": peaks,
        "mfu_denominator": "peak_flops_per_s[dtype].machine: the larger of the two layouts' matmul peaks",
        "mfu_numerator": "mfu: lab.counting.flops_per_token (causal attention); "
        "mfu_palm: lab.counting.flops_per_token_palm (PaLM convention, full attention)",
        "gpu": gpu,
        "packed_members": members,
        "skipped": skipped,
        "seq_len": SEQ_LEN,
        "vocab_size": VOCAB,
        "rows": rows,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _rows(
    r: dict[str, dict[str, float]], impls: list[str], device: str, layout: str, dtype: str, shape: Shape,
    micro: int, peak: float, layout_peak: float, members: int = 1,
) -> list[dict[str, Any]]:
    """One table row per implementation of one measurement ``r`` (from :func:`step_speeds` or
    :func:`workers_speeds`), printed as it is made. ``peak`` is the MFU denominator, ``layout_peak``
    this layout's own; the same-window columns appear when ``r`` holds the matmul probe."""
    c = counts(shape)
    palm = flops_per_token_palm(shape) / c["flops_per_token"]
    out = []
    for impl in impls:
        if "skipped" in r[impl]:
            print(f"{device:>4s} {impl:<14s} {layout:<22s} skipped: {r[impl]['skipped']}", flush=True)
            continue
        fps = r[impl]["flops_per_s"]
        row = {
            "device": device,
            "impl": impl,
            "layout": layout,
            "dtype": dtype,
            "params": c["params"],
            "params_total": c["params_total"],
            "shape": f"L{shape.num_layers} d{shape.d_model} h{shape.num_heads}",
            "micro_batch": micro,
            **r[impl],
            "mfu": fps / peak,
            "mfu_palm": palm * fps / peak,
            "mfu_layout": fps / layout_peak,
        }
        if "matmul" in r:
            row["peak_window"] = r["matmul"]["flops_per_s"]
            row["mfu_window"] = fps / r["matmul"]["flops_per_s"]
        row["speedup_vs_prototype"] = _ratio(r, impl, "prototype")
        row["speedup_vs_hf_llama"] = _ratio(r, impl, "hf")
        # a pack against the solo trainer (eager, as sweeps train on a CPU), K runs' tokens vs one run's rate
        row["speedup_vs_solo"] = _ratio(r, impl, "lab") if impl.startswith("packed") else None
        row["members"] = members if impl.startswith("packed") else 1
        _print_row(row)
        out.append(row)
    return out


def _ratio(r: dict[str, dict[str, Any]], impl: str, base: str) -> float | None:
    """tokens/s of ``impl`` over ``base``'s in the same measurement (None when base was not timed)."""
    if base not in r or "tokens_per_s" not in r[base] or impl == base:
        return None if base not in r or "tokens_per_s" not in r[base] else 1.0
    return r[impl]["tokens_per_s"] / r[base]["tokens_per_s"]


def _print_row(r: dict[str, Any]) -> None:
    def x(key: str) -> str:
        return f"{r[key]:5.2f}x" if r.get(key) is not None else "    - "

    win = f"; window {100 * r['mfu_window']:5.1f}%" if r.get("mfu_window") is not None else ""
    solo = f"  vs solo {x('speedup_vs_solo')}" if r.get("speedup_vs_solo") is not None else ""
    print(
        f"{r['device']:>4s} {r['impl']:<14s} {r['layout']:<22s} {r['dtype']:<8s} {r['shape']:<13s} "
        f"N={r['params']:>10,} {r['tokens_per_s']:>9,.0f} tok/s {r['flops_per_s'] / 1e9:6.1f} GFLOP/s  "
        f"MFU {100 * r['mfu']:5.1f}% (PaLM {100 * r['mfu_palm']:5.1f}%{win})  vs HF Llama {x('speedup_vs_hf_llama')}"
        f"  vs prototype {x('speedup_vs_prototype')}{solo}",
        flush=True,
    )


def _native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without mkldnn
        return False


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lab.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="three sizes only (~100k to ~2M params)")
    ap.add_argument("--seconds", type=float, default=None, help="timed seconds per measurement (2; 1.5 with --quick)")
    ap.add_argument(
        "--dtype", nargs="+", default=None, choices=["float32", "bfloat16"],
        help="default: float32, plus bfloat16 where the CPU has native bf16 (or a GPU exists)",
    )
    ap.add_argument("--layout", nargs="+", default=["process", "workers"], choices=["process", "workers"])
    ap.add_argument(
        "--impl", nargs="+", default=None, choices=list(IMPLS),
        help="what to time (default: hf prototype lab, and packed with --packed): transformers' LlamaForCausalLM, "
        "the plain prototype baseline (lab.bench.prototype), the trainer, a pack of K proxies; +compile: under "
        "torch.compile (adds ~20-40 s of compilation per shape and process)",
    )
    ap.add_argument("--packed", type=int, default=0, metavar="K",
                    help="also time K proxies of each shape trained as one pack (speedup_vs_solo)")
    ap.add_argument("--micro", type=int, default=None, metavar="SEQS",
                    help="micro-batch in sequences of 256 tokens for every shape (default: the ladder's, 8-16; "
                    "the study's proxies train at 2)")
    ap.add_argument("--out", default=None, help="JSON output (default runs/bench/bench-<time>.json)")
    ap.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        _worker_main()
        return
    seconds = args.seconds if args.seconds is not None else (1.5 if args.quick else 2.0)
    if args.packed < 0 or args.packed == 1:
        ap.error("--packed K: give K >= 2 proxies per pack")
    if args.micro is not None and args.micro < 1:
        ap.error("--micro SEQS: give at least 1 sequence per micro-batch")
    impls = args.impl or ["hf", "prototype", "lab", *(["packed"] if args.packed else [])]
    if any(i.startswith("packed") for i in impls) and not args.packed:
        ap.error("--impl packed: say how many proxies per pack with --packed K")
    if args.packed and "lab" not in impls:
        impls.append("lab")  # speedup_vs_solo is measured against it, in the same rotation
    if args.dtype is None:
        args.dtype = ["float32"] + (["bfloat16"] if _native_bf16() else [])
        if "bfloat16" not in args.dtype:
            print("[bench] no native bf16 on this CPU (bf16 matmul runs ~100x below fp32): fp32 only; "
                  "--dtype bfloat16 forces it", flush=True)
    print(f"[bench] measuring matmul peak and {len(QUICK if args.quick else LADDER)} proxy sizes ...", flush=True)
    res = run(args.quick, seconds, args.dtype, args.layout, list(dict.fromkeys(impls)), max(1, args.packed), args.micro)
    for dt, pk in res["peak_flops_per_s"].items():
        print(
            f"[bench] MFU denominator {dt}: machine peak {pk['machine'] / 1e9:.1f} GFLOP/s "
            f"(from the {pk['machine_from']} layout)"
        )
    out = Path(args.out or f"runs/bench/bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"[bench] wrote {out}")


if __name__ == "__main__":
    main()
