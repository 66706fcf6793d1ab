"""``python -m lab.report SWEEP_OR_STUDY... [--out report.html] [--bootstrap K]``: one self-contained
HTML page on studies and/or sweeps (two or more ladders: also their effective compute multiplier).

Exit status: 0 written (with what could not be shown said on the page), 2 bad input (a path that
is not a folder, or no folder holding anything to show), 1 any other failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab.report", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="study folders (with study.json) and/or sweep folders")
    p.add_argument("--out", default="report.html", help="the HTML file to write (default: report.html)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples per fit (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss", default=None, help="loss column for comparing ladders (default loss_val, nats/token; "
                                                "bits per byte, bpb_val, by itself across tokenizers)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    bad = [p for p in args.paths if not Path(p).is_dir()]
    if bad:
        print(f"lab.report: error: not a folder: {', '.join(bad)} (give study or sweep folders)", file=sys.stderr)
        return 2
    if Path(args.out).is_dir():
        print(f"lab.report: error: --out {args.out} is a folder; give a file name (e.g. {Path(args.out) / 'report.html'})",
              file=sys.stderr)
        return 2
    if args.bootstrap < 0:
        print("lab.report: error: --bootstrap must be >= 0", file=sys.stderr)
        return 2
    from lab.report.build import build_report
    from lab.report.sources import open_source

    sources = [open_source(p) for p in args.paths]
    if all(src.kind == "empty" for src in sources):
        why = "; ".join(src.problems[0] for src in sources if src.problems)
        print(f"lab.report: error: nothing to report: {why}", file=sys.stderr)
        return 2
    path = build_report(args.paths, args.out, args.bootstrap, args.seed, loss=args.loss)
    print(f"[report] -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
