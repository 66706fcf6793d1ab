"""The recipe format: a frozen, typed :class:`Recipe` that loads, validates, applies to a run config and writes.

A recipe is one YAML file (format :data:`FORMAT`): the full-size run's shape (``model``), data
(``data``) and optimisation (``train``), the loss it is predicted to reach (``prediction``), and
reports that travel with it (``target``, ``counts``, ``laws``, ``provenance``, ``notes``). This
module is what the trainer reads; it imports neither pandas nor the fitting library. Building a
recipe from fitted laws is :mod:`lab.recipe.build`, one layer up.

Recipes load with ``yaml.safe_load`` only and are validated field by field: a hand-edited recipe
with a bad or unknown field is refused with a :class:`RecipeError` naming it, and a recipe from
another lab version is refused.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

import lab
from lab.config import SCHEDULES, ModelConfig, RunConfig, TrainConfig
from lab.counting import micro_batch_sizes, non_embedding_params, resolve_shape

FORMAT = 1
SBATCH_GPUS = 8  # GPUs per node the written sbatch script assumes (edit the script for your cluster)


class RecipeError(ValueError):
    """A recipe that cannot be built or used; the message names the field or the missing input."""


@dataclass(frozen=True)
class ModelSpec:
    """The full-size run's shape (every field explicit; no shape rule is applied)."""

    num_layers: int
    d_model: int
    num_heads: int
    num_kv_heads: int
    d_ff: int
    head_dim: int
    tie_embeddings: bool = False
    init_std: float | None = None  # None: ModelConfig's default
    rope_theta: float | None = None
    norm_eps: float | None = None


@dataclass(frozen=True)
class DataSpec:
    """Corpus, tokenizer and mixture; a field left out (None) keeps the run config's value."""

    corpus: str | None = None
    tokenizer: str | None = None
    bpe_vocab_size: int | None = None
    seq_len: int | None = None
    mixture: Any = None  # {domain: share}, "natural" or "uniform"; None: natural
    val_weights: Any = None  # None: the training mixture
    val_tokens: int | None = None


@dataclass(frozen=True, kw_only=True)
class TrainSpec:
    """Budget and optimisation: D = ``tokens`` in batches of B = ``batch_tokens``; None: TrainConfig's default."""

    tokens: float
    batch_tokens: int
    batch_seqs: int | None = None
    micro_batch: int | None = None
    steps: int | None = None
    lr: float
    schedule: str
    warmup: float | None = None
    min_lr_ratio: float | None = None
    decay: float | None = None
    decay_shape: str | None = None
    weight_decay: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    eps: float | None = None
    grad_clip: float | None = None


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """The predicted final validation loss (nats/token) with its interval, overall and per domain."""

    level: float | None = None  # the interval's coverage, e.g. 0.95
    loss_val: float
    loss_val_interval: list | None = None  # [lo, hi]
    law: str | None = None
    at: dict | None = None  # where the law was evaluated: {"N", "D"} or {"C"}
    domains: dict | None = None  # {domain: {"loss_val", "loss_val_interval"}}
    approach_choice: dict | None = None  # which loss law predicted, and why (held-out errors, the other's loss)


_SECTIONS = {"model": ModelSpec, "data": DataSpec, "train": TrainSpec, "prediction": Prediction}
_TRAIN_OPTIM = ("warmup", "min_lr_ratio", "decay", "decay_shape", "weight_decay", "beta1", "beta2", "eps",
                "grad_clip")


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. Sections are typed; ``recipe["train"]`` gives a section as a plain dict."""

    model: ModelSpec
    data: DataSpec
    train: TrainSpec
    prediction: Prediction
    lab_recipe: int = FORMAT
    lab_version: str = lab.__version__
    created: str | None = None
    target: dict = field(default_factory=dict)  # what was asked: flops, params or tokens
    counts: dict = field(default_factory=dict)  # N, D, C of the recipe's run and the law's optimum
    laws: dict = field(default_factory=dict)  # each law used, with its constants and whether it was fitted
    provenance: dict = field(default_factory=dict)  # sweeps, runs used and dropped, extrapolation factor
    notes: list = field(default_factory=list)

    _ORDER = ("lab_recipe", "lab_version", "created", "target", "model", "counts", "data", "train", "prediction",
              "laws", "provenance", "notes")

    @classmethod
    def from_dict(cls, r: Any, source: str = "recipe") -> "Recipe":
        """Validate a recipe mapping (as read from YAML); RecipeError names ``source`` and the bad field."""
        return _from_dict(r, source)

    def to_dict(self) -> dict[str, Any]:
        """The YAML document: plain values, in the file's order (optional fields left unset are omitted)."""
        out: dict[str, Any] = {}
        for k in self._ORDER:
            v = getattr(self, k)
            if k in _SECTIONS:
                v = _section_dict(v)
            if v is not None:
                out[k] = copy.deepcopy(v)  # a copy: editing it never changes the frozen recipe
        return out

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def run_config(self, cfg: RunConfig) -> RunConfig:
        """``cfg`` with this recipe's model, data and optimisation (see :func:`apply_recipe`)."""
        return apply_recipe(cfg, self)


def _section_dict(spec: Any) -> dict[str, Any]:
    return {f.name: getattr(spec, f.name) for f in fields(spec)
            if not (f.default is None and getattr(spec, f.name) is None)}


def _section(name: str, raw: Any, where: str) -> Any:
    cls = _SECTIONS[name]
    allowed = [f.name for f in fields(cls)]
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise RecipeError(f"{where}: {name}.{unknown[0]} is not a recipe field (a typo?); "
                          f"allowed in {name}: {', '.join(allowed)}")
    return cls(**raw)


def _check_number(where: str, name: str, v: Any, positive: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (positive and not (v > 0 and math.isfinite(v))):
        raise RecipeError(f"{where}: {name} must be a {'positive ' if positive else ''}number, got {v!r}")


def _shape(m: Mapping, seq_len: int):
    """The model section's shape (N does not depend on the vocabulary, so the byte vocabulary stands in)."""
    return resolve_shape(vocab_size=256, seq_len=seq_len, num_layers=m["num_layers"], d_model=m["d_model"],
                         num_heads=m["num_heads"], num_kv_heads=m["num_kv_heads"], d_ff=m["d_ff"],
                         head_dim=m["head_dim"], tie_embeddings=bool(m.get("tie_embeddings", False)))


def _check_model(m: Mapping, seq_len: int, where: str) -> None:
    for k in ("num_layers", "d_model", "num_heads", "num_kv_heads", "d_ff", "head_dim"):
        v = m.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise RecipeError(f"{where}: model.{k} must be a positive integer, got {v!r}")
    try:
        _shape(m, seq_len)
    except ValueError as e:
        raise RecipeError(f"{where}: model: {e}") from e
    if not isinstance(m.get("tie_embeddings", False), bool):
        raise RecipeError(f"{where}: model.tie_embeddings must be true or false, got {m.get('tie_embeddings')!r}")


def _check_train(t: Mapping, where: str) -> None:
    for k in ("batch_tokens", "micro_batch"):
        v = t.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise RecipeError(f"{where}: train.{k} must be an integer, got {v!r}")
    if t.get("schedule") not in SCHEDULES:
        raise RecipeError(f"{where}: train.schedule {t.get('schedule')!r}; allowed: {', '.join(SCHEDULES)}")
    for k in ("tokens", "batch_tokens", "lr"):
        v = t.get(k)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (v > 0 and math.isfinite(v)):
            raise RecipeError(f"{where}: train.{k} must be a positive number, got {v!r}")


def _check_mixture(mix: Any, where: str) -> None:
    if isinstance(mix, dict):
        vals = list(mix.values())
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0
               for v in vals) or not abs(sum(vals) - 1) <= 1e-6:
            raise RecipeError(f"{where}: data.mixture must be non-negative shares summing to 1, got {mix}")
    elif mix not in ("natural", "uniform"):
        raise RecipeError(f"{where}: data.mixture must be 'natural', 'uniform' or {{domain: share}}, got {mix!r}")


def _from_dict(r: Any, where: str) -> Recipe:
    if not isinstance(r, dict) or "lab_recipe" not in r:
        raise RecipeError(f"{where}: not a lab recipe (no 'lab_recipe' format key)")
    if r["lab_recipe"] != FORMAT:
        raise RecipeError(f"{where}: format {r['lab_recipe']!r}, this lab reads format {FORMAT}")
    if r.get("lab_version") != lab.__version__:
        raise RecipeError(f"{where} was written by lab {r.get('lab_version')!r}, this is lab {lab.__version__}: "
                          "laws and counting may differ between versions; rebuild it with python -m lab.recipe")
    unknown = [k for k in r if k not in Recipe._ORDER]
    if unknown:
        raise RecipeError(f"{where}: {unknown[0]!r} is not a recipe section; allowed: {', '.join(Recipe._ORDER)}")
    for sec in ("model", "data", "train", "prediction"):
        if not isinstance(r.get(sec), dict):
            raise RecipeError(f"{where}: section {sec!r} is missing or not a mapping")
    seq_len = r["data"].get("seq_len", 256)
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
        raise RecipeError(f"{where}: data.seq_len must be a positive integer, got {seq_len!r}")
    _check_model(r["model"], seq_len, where)
    p = r["prediction"]
    if not isinstance(p.get("loss_val"), (int, float)) or isinstance(p.get("loss_val"), bool):
        raise RecipeError(f"{where}: prediction.loss_val must be a number, got {p.get('loss_val')!r}")
    _check_train(r["train"], where)
    _check_mixture(r["data"].get("mixture", "natural"), where)
    sections = {k: _section(k, r[k], where) for k in _SECTIONS}
    _check_prediction_matches(r, where)
    rest = {k: r[k] for k in Recipe._ORDER if k in r and k not in _SECTIONS}
    rec = Recipe(**sections, **rest)
    try:
        apply_recipe(RunConfig(), rec).validate(check_paths=False)
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{where}: {e}") from e
    return rec


def _check_prediction_matches(r: Mapping, where: str) -> None:
    """Refuse a recipe whose run no longer is the one its loss was predicted for (a hand edit of the
    shape, the tokens or the mixture that left the prediction behind)."""
    m, t, counts = r["model"], r["train"], r.get("counts") or {}
    n, d = non_embedding_params(_shape(m, int(r["data"].get("seq_len", 256)))), float(t["tokens"])
    at = r["prediction"].get("at") or {}
    claims = [("counts.params", counts.get("params"), n), ("prediction.at.N", at.get("N"), n),
              ("counts.tokens", counts.get("tokens"), d), ("prediction.at.D", at.get("D"), d)]
    for name, claimed, actual in claims:
        if claimed is not None and not math.isclose(float(claimed), actual, rel_tol=1e-9):
            raise RecipeError(f"{where}: the prediction is for {name} = {float(claimed):.6g}, but the model and train "
                              f"sections now give {actual:.6g}: an edit changed the run without its predicted loss; "
                              "undo the edit or rebuild the recipe with python -m lab.recipe")
    law = ((r.get("laws") or {}).get("mixture") or {})
    if "value" in law and law["value"] != r["data"].get("mixture", "natural"):
        raise RecipeError(f"{where}: data.mixture {r['data'].get('mixture')!r} is not the mixture the recipe was built "
                          f"for ({law['value']!r}, laws.mixture.value): undo the edit or rebuild the recipe")


def recipe_sha256(path: str | Path) -> str:
    """The recipe file's content hash: a run records it, and the back-test checks the run was trained from it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_recipe(path: str | Path) -> Recipe:
    """Read (safe YAML) and validate a recipe; RecipeError names the bad field."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {str(path)!r} does not exist")
    try:
        r = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path}: not valid YAML (safe loader): {e}") from e
    return _from_dict(r, f"recipe {path}")


def apply_recipe(cfg: RunConfig, recipe: Recipe | Mapping[str, Any]) -> RunConfig:
    """``cfg`` with the recipe's model, data and optimisation; hardware, run_dir and logging stay."""
    if not isinstance(recipe, Recipe):
        recipe = _from_dict(dict(recipe), "recipe")
    m, d, t = recipe.model, recipe.data, recipe.train
    dm = ModelConfig()
    model = ModelConfig(depth=None, num_layers=m.num_layers, d_model=m.d_model, num_heads=m.num_heads,
                        num_kv_heads=m.num_kv_heads, d_ff=m.d_ff, head_dim=m.head_dim,
                        tie_embeddings=bool(m.tie_embeddings),
                        init_std=float(_or(m.init_std, dm.init_std)), rope_theta=float(_or(m.rope_theta, dm.rope_theta)),
                        norm_eps=float(_or(m.norm_eps, dm.norm_eps)))
    c = cfg.data
    data = replace(c, corpus=_or(d.corpus, c.corpus), tokenizer=_or(d.tokenizer, c.tokenizer),
                   bpe_vocab_size=int(_or(d.bpe_vocab_size, c.bpe_vocab_size)), seq_len=int(_or(d.seq_len, c.seq_len)),
                   mixture=_or(d.mixture, "natural"), val_weights=_or(d.val_weights, "mixture"),
                   val_tokens=int(_or(d.val_tokens, c.val_tokens)))
    keep = {k: getattr(cfg.train, k) for k in ("device", "dtype", "compile", "threads", "progress", "tensorboard",
                                                "wandb", "wandb_mode", "wandb_project", "ckpt_every", "eval_every",
                                                "log_every", "keep_ckpt", "seed", "diverge_factor", "parallel")}
    opt = {k: getattr(t, k) for k in _TRAIN_OPTIM if getattr(t, k) is not None}
    train = TrainConfig(tokens=float(t.tokens), flops=None, batch_tokens=int(t.batch_tokens), lr=t.lr,
                        schedule=t.schedule,
                        # a command-line micro-batch wins: it is memory and process layout, not the recipe
                        micro_batch=cfg.train.micro_batch or t.micro_batch, **opt, **keep)
    return replace(cfg, model=model, data=data, train=train)


def _or(v: Any, default: Any) -> Any:
    return default if v is None else v


def write_recipe(recipe: Recipe | Mapping[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write the recipe YAML and a Slurm launch script beside it; return both paths."""
    from lab.io import atomic_write_bytes

    doc = recipe.to_dict() if isinstance(recipe, Recipe) else dict(recipe)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    head = (f"# lab recipe (format {FORMAT}, lab {doc['lab_version']}): the full-size run derived from fitted laws.\n"
            f"# Train it: python -m lab.train recipe={out} run_dir=runs/full\n"
            f"#   data parallel: torchrun --nproc_per_node=K -m lab.train recipe={out} run_dir=runs/full\n"
            f"#   Slurm: sbatch {out.with_suffix('.sbatch')}\n")
    atomic_write_bytes(out, (head + yaml.safe_dump(doc, sort_keys=False, width=110)).encode())
    sb = out.with_suffix(".sbatch")
    micro = max(micro_batch_sizes(int(doc["train"]["batch_seqs"]), SBATCH_GPUS) or [1])
    atomic_write_bytes(sb, slurm_script(out, gpus_per_node=SBATCH_GPUS, micro_batch=micro).encode())
    return out, sb


def slurm_script(recipe_path: Path, nodes: int = 1, gpus_per_node: int = SBATCH_GPUS, micro_batch: int = 1) -> str:
    """An sbatch script: one torchrun per node, rendezvous on the first node (c10d)."""
    return f"""#!/bin/bash
# Launch the recipe's run on a Slurm cluster: one torchrun per node, {gpus_per_node} processes per node.
# Edit the SBATCH lines for your cluster; the run resumes from its checkpoint when requeued.
#SBATCH --job-name=lab-recipe
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus_per_node}
#SBATCH --cpus-per-task=16
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --signal=USR2@120
#SBATCH --output=%x-%j.out
set -euo pipefail
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
RUN_DIR=${{RUN_DIR:-runs/{Path(recipe_path).stem}}}
srun torchrun --nnodes="$SLURM_NNODES" --nproc_per_node={gpus_per_node} \\
  --rdzv_id="$SLURM_JOB_ID" --rdzv_backend=c10d --rdzv_endpoint="$HEAD:29500" \\
  -m lab.train recipe={Path(recipe_path).resolve()} run_dir="$RUN_DIR" train.micro_batch={micro_batch}
"""


def summary(recipe: Recipe | Mapping[str, Any]) -> str:
    """A few lines a person reads: the shape, data, batch and LR, and the predicted loss with its interval."""
    r = recipe.to_dict() if isinstance(recipe, Recipe) else recipe
    c, m, t, p = r["counts"], r["model"], r["train"], r["prediction"]
    iv = [math.nan if v is None else v for v in (p.get("loss_val_interval") or [None, None])]
    lines = [
        f"[recipe] target C = {c['flops']:.3g} FLOPs ({r['provenance']['extrapolation_factor']:.1f}x the largest "
        f"sweep budget)",
        f"  model  N = {c['params']:,} (total {c['params_total']:,}): {m['num_layers']} layers, d={m['d_model']}, "
        f"heads {m['num_heads']}/{m['num_kv_heads']}, ff {m['d_ff']}   (law's N_opt {c.get('N_opt_law') or math.nan:.3g})",
        f"  data   D = {c['tokens']:.4g} tokens ({c['tokens_per_param']:.0f} tokens/param), mixture "
        f"{r['data']['mixture'] if isinstance(r['data']['mixture'], str) else 'as swept'}",
        f"  batch  {t['batch_tokens']:,} tokens ({t['batch_seqs']} x {r['data']['seq_len']}), micro-batch "
        f"{t['micro_batch']}, {t['steps']:,} steps; lr {t['lr']:.3g} {t['schedule']} (batch/LR laws: "
        + ("fitted)" if r["laws"]["lr"]["fitted"] else "not fitted, from the sweeps)"),
        f"  loss   predicted loss_val = {p['loss_val']:.4f} nats/token  [{iv[0]:.4f}, {iv[1]:.4f}] "
        f"({p.get('level', 0.95):.0%}, {p['law']})",
    ]
    for dname, dv in (p.get("domains") or {}).items():
        div = [math.nan if v is None else v for v in (dv.get("loss_val_interval") or [None, None])]
        lines.append(f"         {dname:<14s} {dv['loss_val']:.4f}  [{div[0]:.4f}, {div[1]:.4f}]")
    health = (r.get("laws") or {}).get("loss", {}).get("health")
    if health:
        lines.append(f"  health {health['verdict']}" + "".join(f"\n         {x}" for x in health.get("reasons", [])))
    for n in r.get("notes", []):
        lines.append(f"  note: {n}")
    return "\n".join(lines)
