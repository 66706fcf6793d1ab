"""What a staged study runs: typed, frozen settings per stage, and the two presets.

Symbols as in :mod:`lab.counting`: N non-embedding parameters, D tokens, C training FLOPs in the
lab's convention (``flops_per_token(shape) * D``), B = batch in tokens.

The presets are sized for 2 CPU cores (``DEFAULT`` about 21 minutes, ``QUICK`` about 8):

* **hparams** (stage a): a batch x LR grid at 4 sizes (2 in ``QUICK``), one WSD run each with
  cooldown branches at 3 budgets' D, so every run gives 3 cells of the form-ND laws lr_opt(N, D)
  and B_opt(D). At these sizes the best LR falls ~4x from 1 to 2 layers: a law in C alone would
  give every model of an IsoFLOP profile the compute-optimal model's LR and bend the profile.
* **mixture** (stage b): the axial mixture design (the centroid, each domain raised and lowered;
  the same for every seed) at 3 sizes, D/N fixed, each at stage a's batch and LR: the nested
  mixing law picks the target's mixture inside the runs' hull, or keeps the uniform mixture when
  its optimum does not clearly beat it.
* **loss** (stage c): IsoFLOP profiles from one WSD run per size (cooldown branches end at the
  smaller budgets its size belongs to), with seeds, on stage b's mixture at stage a's batch and LR.
* **full** (stage e): the recipe's run, with ``full_seeds`` seeds: the first is back-tested, the
  spread of all is the floor any prediction has to live with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class HparamStage:
    """Stage a: a batch x LR grid at several sizes, one WSD run per (size, B, lr) whose cooldown
    branches end at each budget's D (the isoflop_wsd design): every run gives one cell per budget,
    and the form-ND laws lr_opt(N, D), B_opt(D) see N and D vary apart."""

    sizes: tuple[float, ...] = (1.3e4, 2.7e4, 5.5e4, 1.07e5)
    budgets: tuple[float, ...] = (6.25e10, 1.25e11, 2.5e11)
    spread: float = 16.0  # a size serves the budgets whose prior optimum is within spread x of it
    batches: tuple[int, ...] = (512, 1024)
    lrs: tuple[float, ...] = (1.5e-3, 3e-3, 6e-3)
    widen_rounds: int = 1  # sizes whose best runs sit on an LR or batch edge get the grid extended past it
    # The smallest batch considered (tokens). Below 2 sequences a CPU step is all overhead: these
    # proxies are step-limited and would take batch 1 sequence at ~4x the wall time per token.
    min_batch: int = 512


@dataclass(frozen=True)
class MixtureStage:
    """Stage b: ``n_mixtures`` mixtures at every size, D = tokens_per_param * N.

    The default design is axial (:func:`lab.designs.axial_mixtures`): the centroid and each domain
    raised and lowered, the same for every study seed. Random Dirichlet draws (``design="dirichlet"``)
    moved the chosen mixture from seed to seed more than the law could tell mixtures apart.
    """

    sizes: tuple[float, ...] = (4e3, 1.3e4, 2.7e4)
    design: str = "axial"
    n_mixtures: int | None = None  # None: 1 + 2M for M domains (the axial design's count)
    tokens_per_param: float = 40.0
    alpha: float = 1.0  # Dirichlet concentration of draws beyond the axial points
    max_epochs: float = 4.0  # no domain repeated more often than this in the target run
    min_share: str | None = None  # 'domain=0.05,...' bounds on the chosen mixture
    max_share: str | None = None


@dataclass(frozen=True)
class LossStage:
    """Stage c: IsoFLOP profiles at ``budgets`` from one WSD run per size, ``seeds`` seeds each."""

    budgets: tuple[float, ...] = (2.5e11, 5e11, 1e12, 2e12)
    # the ladder's shapes around the measured optima (~15k at 2.5e11 to ~55k at 2e12 FLOPs); below
    # ~1e6 tokens the loss curves of these proxies still jump (seed to seed by up to 3.5%), so the
    # smallest budget is where every size has left that regime
    sizes: tuple[float, ...] = (4e3, 1.3e4, 2.7e4, 5.5e4, 1.07e5, 1.6e5)
    # A size belongs to budget C when it lies within spread x of C's prior optimum: a size's one run
    # serves every budget it belongs to (branches are cheap), so approach 3 sees N and D vary apart.
    spread: float = 8.0
    seeds: int = 2


@dataclass(frozen=True)
class StudyConfig:
    """The whole study: the stages, the target and what every run shares."""

    name: str = "default"
    hparams: HparamStage = field(default_factory=HparamStage)
    mixture: MixtureStage = field(default_factory=MixtureStage)
    loss: LossStage = field(default_factory=LossStage)
    target_factor: float = 10.0  # the target C is this many times the loss stage's largest budget
    full_seeds: int = 2
    seed: int = 0  # shifts every stage's training seeds (and any random mixture draws): a whole new study
    corpus: str = "builtin"
    seq_len: int = 256
    tokens_per_param: float = 120.0  # the prior D/N of the designs (measured for byte-level proxies)
    warmup: float = 0.02
    decay: float = 0.2
    bootstrap: int = 400

    @property
    def target_flops(self) -> float:
        return self.target_factor * max(self.loss.budgets)

    def with_seed(self, seed: int) -> "StudyConfig":
        return replace(self, seed=int(seed))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def common_overrides(self) -> list[str]:
        """The settings every run of the study shares (so their losses mean the same thing)."""
        return [f"data.corpus={self.corpus}", f"data.seq_len={self.seq_len}", "data.val_weights=uniform",
                "train.schedule=wsd", f"train.decay={self.decay}", f"train.warmup={self.warmup}",
                f"design.tokens_per_param={self.tokens_per_param}"]


DEFAULT = StudyConfig()

QUICK = StudyConfig(
    name="quick",
    hparams=HparamStage(sizes=(1.3e4, 5.5e4), budgets=(6.25e10, 1.25e11, 2.5e11)),
    mixture=MixtureStage(tokens_per_param=20.0),  # the axial design at half the tokens: ~2 min, not ~3.7
    loss=LossStage(budgets=(2.5e11, 5e11, 1e12), sizes=(4e3, 1.3e4, 2.7e4, 5.5e4, 1.07e5), seeds=1),
    target_factor=3.0, full_seeds=1, bootstrap=200,
)

PRESETS = {"default": DEFAULT, "quick": QUICK}
