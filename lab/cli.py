"""Small helpers the command lines share."""

from __future__ import annotations

import re
import sys

_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def join_negative_numbers(argv: list[str] | None) -> list[str]:
    """``--target-flops -1e13`` -> ``--target-flops=-1e13``, so argparse reads the value as a number
    (and the range check can say it must be positive) instead of failing on an unknown option."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out: list[str] = []
    for a in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE_NUMBER.match(a):
            out[-1] = f"{out[-1]}={a}"
        else:
            out.append(a)
    return out
