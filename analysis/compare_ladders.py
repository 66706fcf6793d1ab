# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Comparing two ladders: the effective compute multiplier
#
# Two IsoFLOP ladders (two mixtures, architectures, tokenizers, or two seeds of one study) compared
# by how much compute ladder A needs to reach the loss ladder B reaches:
#
#     k(C) = C_A(L*_B(C)) / C
#
# with L* a ladder's compute-optimal loss (its IsoFLOP profiles' minima, Chinchilla approach 2,
# arXiv:2203.15556). **k > 1: B is better**: it reaches A's loss with 1/k of the compute; k = 2 is
# worth a doubling of A's compute, k < 1 is a loss. Per budget of B, its measured minimum is read
# through A's measured minima; at the target both ladders' frontiers are extrapolated, which is
# where the interval widens. All of it is `lab.fit.compare.compare_ladders`, the report's own.
#
# **One tokenizer only.** Losses in nats/token compare only between ladders that share a tokenizer
# (a token is a different amount of text otherwise). Across tokenizers set `LOSS = "bpb_val"`
# (bits per byte).
#
# The default compares the default study with the stability study the README's
# `python -m lab.study --seed 1 --out runs/study-s1` writes: same recipe, another seed, so k should
# sit near 1 and its interval is the seed-to-seed noise of the comparison itself.

# %% tags=["parameters"]
A = "runs/study"       # ladder A: a study (its loss ladder, stage c) or a sweep folder; relative: to the repo root
B = "runs/study-s1"    # ladder B, compared over A; when it is missing, A is compared with itself
LOSS = None            # None: loss_val (nats/token); "bpb_val" for ladders of different tokenizers
TARGET_FLOPS = None    # C (FLOPs) of the headline k; None: B's study target, else A's, else 10x the largest shared budget
BOOTSTRAP = 200        # bootstrap draws per ladder (the 95% intervals); fewer is faster
SEED = 0

# %%
from lab.fit.compare import compare_ladders
from lab.plots import plot_multiplier, plot_profiles_overlay
from lab.report.build import target_of
from lab.report.fits import attempt
from lab.report.notebook import open_folder
from lab.results import load_runs

src_a, src_b = open_folder(A, "A"), open_folder(B, "B")
if "loss" in src_a.sweeps and "loss" not in src_b.sweeps:
    print("B has no loss ladder: comparing A with itself as a sanity check (k should be about 1)")
    src_b = src_a

# %% [markdown]
# ## The multiplier, per budget and at the target
#
# One row per budget of B (its measured minimum read through A's minima; `extrapolated` where B's
# loss lies beyond A's range), then the target row from both frontiers, and the verdict with its
# reasons (`weak` when the target's interval spans a wide factor or the frontier forms disagree).

# %%
if "loss" not in src_a.sweeps:
    cmp, names = None, None
    print(f"no comparison: A ({src_a.path}) has no loss ladder")
else:
    names = (src_a.name, src_b.name) if src_a.name != src_b.name else (f"{src_a.name} (A)", f"{src_b.name} (B)")
    got = attempt(lambda: compare_ladders(load_runs(*src_a.sweeps["loss"]), load_runs(*src_b.sweeps["loss"]),
                                          target_flops=TARGET_FLOPS or target_of(src_b) or target_of(src_a),
                                          bootstrap=BOOTSTRAP, seed=SEED, names=names, loss=LOSS))
    cmp = got.value
    if not got.ok:
        print(f"no comparison: {got.error}")
    else:
        display(cmp)
        for note in cmp.notes:
            print("note:", note)

# %% [markdown]
# ## k(C) from the ladders' budgets to the target
#
# Points: each budget of B with its bootstrap bar (hollow: beyond A's minima); line and band: k from
# both frontiers out to the target (star); dashed: k = 1, no difference. Look for the points and the
# line to agree where they overlap, and for the band at the target: a band that spans 1 means the
# ladders do not differ at that compute, whatever the point estimate says.

# %%
if cmp is not None:
    plot_multiplier(cmp);

# %% [markdown]
# ## Both ladders' IsoFLOP profiles
#
# A in circles and solid parabolas, B in triangles and dashed ones; a budget's colour is its C on one
# scale for both, crosses mark each profile's minimum. B better shows as its minima below A's at the
# same colour. Profiles without an interior minimum give no per-budget k.

# %%
if cmp is not None and cmp.fits:
    plot_profiles_overlay(*cmp.fits, names=names);
