"""Typed configuration: the one schema of every knob (dataclasses; Hydra's ConfigStore).

Values live in YAML under ``conf/``; these dataclasses are the schema Hydra checks them against
(unknown keys and wrong types fail at composition). Entry points convert the composed DictConfig
into these objects with :func:`to_run_config`, so ``lab.train.train(cfg)`` can be called from a test
or a notebook without Hydra. :meth:`RunConfig.validate` raises ``ValueError`` naming the field and
the allowed values *before* any compute is spent. No logic beyond validation lives here: the shape
rule and FLOP arithmetic are in :mod:`lab.counting`.
"""

from __future__ import annotations

import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Optional

from lab.counting import ASPECT, DESIGN_HEAD_DIM, FFN_MULT, FFN_MULTIPLE_OF, HEAD_DIM, micro_batch_sizes, positive_int

SCHEDULES = ("cosine", "wsd", "constant")
DECAY_SHAPES = ("linear", "sqrt", "cosine")
TOKENIZERS = ("byte", "bpe")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16")
COMPILE = ("auto", "on", "off")
PARALLEL = ("ddp", "fsdp")


@dataclass
class ModelConfig:
    """Decoder shape. ``depth`` is the size knob; explicit fields override the shape rule."""

    depth: Optional[int] = 4
    aspect: int = ASPECT  # d_model = aspect * depth, rounded up to a multiple of head_dim
    head_dim: int = HEAD_DIM
    num_layers: Optional[int] = None
    d_model: Optional[int] = None
    num_heads: Optional[int] = None
    num_kv_heads: Optional[int] = None
    kv_ratio: int = 1  # num_heads / num_kv_heads (grouped-query attention) when num_kv_heads unset
    d_ff: Optional[int] = None
    ffn_mult: float = FFN_MULT
    ffn_multiple_of: int = FFN_MULTIPLE_OF
    tie_embeddings: bool = False
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02


@dataclass
class DataConfig:
    """Which corpus, how it is tokenised and mixed."""

    corpus: str = "builtin"  # "builtin", "fixture", or a folder (built corpus or one folder per domain)
    tokenizer: str = "byte"  # "byte" (vocab 256) or "bpe" (trained locally, cached)
    bpe_vocab_size: int = 4096
    seq_len: int = 256
    # Training proportions per domain: "natural" (by train tokens), "uniform", or {domain: share}.
    mixture: Any = "natural"
    # Weights that combine per-domain validation losses into loss_val: "mixture" (the training
    # mixture), "uniform", "natural", or {domain: weight}.
    val_weights: Any = "mixture"
    val_tokens: int = 32768  # per domain, fixed held-out windows
    root: Optional[str] = None  # cache root; default $LAB_HOME or ~/.cache/lab


@dataclass
class TrainConfig:
    """Optimisation, budget, evaluation, checkpointing and hardware knobs."""

    tokens: Optional[float] = None  # D; exactly one of tokens / flops
    flops: Optional[float] = None  # C in the lab's convention (lab.counting); D = C / flops_per_token
    batch_tokens: int = 8192  # B, global batch in tokens
    micro_batch: Optional[int] = None  # sequences per forward; default: the whole batch (no accumulation)
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"
    warmup: float = 0.05  # fraction of steps if < 1, else a number of steps
    decay: float = 0.2  # WSD: fraction of steps in the final decay
    decay_shape: str = "sqrt"  # WSD decay: linear, sqrt (1 - sqrt, Hägele et al. 2024), cosine
    # WSD only: token counts D_i < D at which a cooldown branch forks off the stable phase, decays
    # over `decay` x its length and is evaluated, giving L(D_i) without a separate run each.
    cooldowns: List[float] = field(default_factory=list)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    seed: int = 0
    eval_every: int = 0  # steps; 0 = up to 20 evaluations costing <= ~10% of training (lab.plan)
    log_every: int = 0  # steps; 0 = about 100 log lines per run (lab.plan)
    ckpt_every: int = 0  # steps; 0 = about 10 checkpoints per run (lab.plan); -1 = never
    keep_ckpt: bool = False  # keep the last checkpoint after a successful run
    diverge_factor: float = 2.0  # loss above factor x initial loss (or non-finite) = diverged
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    # auto: torch.compile on a GPU; on a CPU when the run is long enough to repay compiling (lab.compile)
    compile: str = "auto"
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    # Gradient noise scale (McCandlish et al. 2018): B_noise from micro-batch vs batch gradient norms,
    # logged per step (needs >= 2 micro-batches per step, one process); where larger batches stop paying.
    gns: bool = False
    parallel: str = "ddp"  # under torchrun: ddp (replicated model) or fsdp (sharded: models too big for one device)
    progress: bool = True
    tensorboard: bool = False  # stream metrics to <run_dir>/tensorboard (pip install tensorboard)
    wandb: bool = False  # stream metrics to Weights & Biases (pip install wandb)
    wandb_mode: str = "offline"  # offline works without a network; sync later with `wandb sync`
    wandb_project: str = "lab"


@dataclass
class RunConfig:
    """One training run: model, data, optimisation and where its record goes."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run_dir: str = "runs/default"
    recipe: Optional[str] = None  # a recipe file (lab.recipe): its model, data and optimisation replace these
    tags: Dict[str, Any] = field(default_factory=dict)  # free-form columns for the results table

    def validate(self, check_paths: bool = True) -> "RunConfig":
        """Check every field that can be checked without data; raise ValueError naming it.

        ``check_paths``: also check that a ``data.corpus`` folder exists (off when only the shape of
        a config is checked, as when a recipe is validated on a machine without its corpus).
        """
        t, d = self.train, self.data
        _choice("train.schedule", t.schedule, SCHEDULES)
        _choice("train.decay_shape", t.decay_shape, DECAY_SHAPES)
        _choice("data.tokenizer", d.tokenizer, TOKENIZERS)
        _choice("train.device", t.device, DEVICES)
        _choice("train.dtype", t.dtype, DTYPES)
        _choice("train.compile", t.compile, COMPILE)
        _choice("train.parallel", t.parallel, PARALLEL)
        if (t.tokens is None) == (t.flops is None):
            raise ValueError(
                "train.tokens / train.flops: give exactly one budget, D in tokens (train.tokens=2e6) "
                "or C in FLOPs (train.flops=1e12)"
            )
        for name in ("tokens", "flops"):
            v = getattr(t, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"train.{name}: must be a positive finite number, got {v!r}")
        if check_paths and d.corpus not in ("builtin", "fixture") and not os.path.exists(
                os.path.expanduser(str(d.corpus))):
            raise ValueError(f"data.corpus: {d.corpus!r} is neither builtin, fixture nor an existing folder "
                             "(a built corpus, or one subfolder of text files per domain)")
        positive_int("data.seq_len", d.seq_len)
        positive_int("train.batch_tokens", t.batch_tokens)
        positive_int("data.val_tokens", d.val_tokens)
        if t.batch_tokens % d.seq_len:
            raise ValueError(
                f"train.batch_tokens: {t.batch_tokens} must be a multiple of data.seq_len={d.seq_len} "
                f"(e.g. {max(1, t.batch_tokens // d.seq_len) * d.seq_len})"
            )
        seqs = t.batch_tokens // d.seq_len
        if t.micro_batch is not None:
            positive_int("train.micro_batch", t.micro_batch)
            if seqs % t.micro_batch:
                raise ValueError(
                    f"train.micro_batch: {t.micro_batch} must divide the batch of {seqs} sequences "
                    f"(train.batch_tokens / data.seq_len); allowed: {micro_batch_sizes(seqs)}"
                )
        if d.tokenizer == "bpe" and not (256 < d.bpe_vocab_size <= 65535):
            raise ValueError(f"data.bpe_vocab_size: must be in (256, 65535], got {d.bpe_vocab_size}")
        for name, lo, hi in (("lr", 0.0, 10.0), ("min_lr_ratio", -1e-12, 1.0), ("decay", 0.0, 1.0)):
            v = getattr(t, name)
            if not (lo < v <= hi) and not (name == "min_lr_ratio" and v == 0):
                raise ValueError(f"train.{name}: must be in ({lo}, {hi}], got {v}")
        if t.warmup < 0:
            raise ValueError(f"train.warmup: must be >= 0 (a fraction < 1 or a number of steps), got {t.warmup}")
        if t.grad_clip < 0 or t.weight_decay < 0:
            raise ValueError("train.grad_clip and train.weight_decay must be >= 0")
        if not (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1):
            raise ValueError(f"train.beta1/beta2: must be in [0, 1), got {t.beta1}, {t.beta2}")
        if t.cooldowns:
            if t.schedule != "wsd":
                raise ValueError(f"train.cooldowns: cooldown branches need train.schedule=wsd, got {t.schedule!r}")
            bad = [c for c in t.cooldowns if not (isinstance(c, (int, float)) and math.isfinite(c) and c > 0)]
            if bad:
                raise ValueError(f"train.cooldowns: token counts must be positive numbers, got {bad}")
        if t.diverge_factor <= 1:
            raise ValueError(f"train.diverge_factor: must be > 1, got {t.diverge_factor}")
        if not self.run_dir:
            raise ValueError("run_dir: give a folder for the run's record, e.g. run_dir=runs/my_run")
        return self


DESIGN_KINDS = ("none", "isoflop", "isoflop_wsd", "kaplan", "batch_lr", "mixture")
MIXTURE_DESIGNS = ("dirichlet", "axial")


@dataclass
class DesignConfig:
    """Which point of a sweep design this job is (see :mod:`lab.designs`).

    Sweep files sweep the per-job axes (``budget``, ``size``, ``tokens``, ``mixture``) with Hydra;
    the job turns its point into a model shape and a budget in Python. ``none``: the run's own
    config is used as is (a plain grid over any keys).
    """

    kind: str = "none"
    budget: Optional[float] = None  # C of this job (isoflop, batch_lr)
    size: Optional[int] = None  # size index (isoflop: 0..n_sizes-1 around the prior optimum; kaplan/mixture: into sizes)
    tokens: Optional[float] = None  # D of this job (kaplan)
    mixture: Optional[int] = None  # mixture index (mixture design)
    n_sizes: int = 5
    spread: float = 4.0  # isoflop: sizes from 1/spread to spread x the prior optimum
    tokens_per_param: float = 20.0  # prior for the compute-optimal size (Chinchilla's ~20)
    sizes: Any = None  # kaplan / mixture / isoflop_wsd: list of target N
    budgets: Any = None  # isoflop_wsd: the IsoFLOP budgets C that the size's one WSD run serves
    branch_fracs: Any = None  # batch_lr: WSD cooldown branches ending at these fractions of the budget
    n_mixtures: int = 8
    alpha: float = 1.0  # Dirichlet concentration of sampled mixtures
    mixtures: str = "dirichlet"  # mixture design: dirichlet draws, or axial (centroid, each domain up and down)
    seed: int = 0
    aspect: int = ASPECT
    head_dim: int = DESIGN_HEAD_DIM
    # a fitted batch/LR law (`python -m lab.fit hparams SWEEP --json > law.json`): each point then trains at
    # the law's B_opt (rounded to a power-of-two number of sequences) and lr_opt for its C (or N and D)
    hparams: Optional[str] = None

    def validate(self) -> "DesignConfig":
        _choice("design.kind", self.kind, DESIGN_KINDS)
        needs = {"isoflop": ("budget", "size"), "kaplan": ("size", "tokens"), "batch_lr": ("budget",),
                 "mixture": ("size", "mixture"), "isoflop_wsd": ("size", "budgets")}.get(self.kind, ())
        for name in needs:
            if getattr(self, name) is None:
                raise ValueError(f"design.{name}: the {self.kind} design needs it set (swept by the sweep file)")
        if self.kind == "isoflop" and not (0 <= self.size < self.n_sizes):
            raise ValueError(f"design.size: {self.size} is outside range(design.n_sizes={self.n_sizes})")
        if self.kind == "isoflop_wsd" and not all(isinstance(c, (int, float)) and c > 0 for c in self.budgets):
            raise ValueError(f"design.budgets: positive FLOP counts, got {self.budgets!r}")
        if self.kind in ("kaplan", "mixture", "isoflop_wsd"):
            if not self.sizes:
                raise ValueError(f"design.sizes: the {self.kind} design needs a list of target sizes N")
            if not (0 <= self.size < len(self.sizes)):
                raise ValueError(f"design.size: {self.size} is outside range(len(design.sizes)={len(self.sizes)})")
        if self.hparams is not None and self.kind in ("batch_lr", "none"):
            raise ValueError(f"design.hparams: the {self.kind} design sets its own batch and LR; drop design.hparams")
        _choice("design.mixtures", self.mixtures, MIXTURE_DESIGNS)
        if self.kind == "mixture" and not (0 <= self.mixture < self.n_mixtures):
            raise ValueError(f"design.mixture: {self.mixture} is outside range(design.n_mixtures={self.n_mixtures})")
        return self


@dataclass
class SweepConfig(RunConfig):
    """A sweep job: a run plus the design point it stands for."""

    design: DesignConfig = field(default_factory=DesignConfig)


def _choice(field_name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{field_name}: {value!r} is not one of {', '.join(allowed)}")


def _build(cls: type, values: Any) -> Any:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclass fields."""
    if isinstance(values, cls):
        return values
    values = dict(values or {})
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown config keys for {cls.__name__}: {unknown}; allowed: {sorted(known)}")
    kwargs = {}
    for name, f in known.items():
        if name not in values:
            continue
        v = values[name]
        default = f.default_factory() if f.default_factory is not MISSING else None  # type: ignore[misc]
        kwargs[name] = _build(type(default), v) if is_dataclass(default) else v
    return cls(**kwargs)


def to_run_config(cfg: Any, cls: type = RunConfig) -> RunConfig:
    """Typed :class:`RunConfig` (or ``cls``) from a Hydra DictConfig, a plain dict or a RunConfig."""
    if isinstance(cfg, RunConfig):
        return cfg
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):  # the hydra node is not part of a run (and may not resolve)
            cfg = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra-core, a core dependency
        pass
    cfg = {k: v for k, v in dict(cfg).items() if k != "hydra"}
    return _build(cls, cfg)


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return asdict(cfg)


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore (called by the Hydra entry points)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(name="sweep_schema", node=SweepConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    # lab.sweep.PackingSweeper: Hydra's basic sweeper that does not launch the jobs a pack trains
    cs.store(group="hydra/sweeper", name="packing", node={
        "_target_": "hydra_plugins.lab_packing.PackingSweeper", "max_batch_size": None, "params": None}, provider="lab")
    cs.store(group="data", name="data_schema", node=DataConfig)
