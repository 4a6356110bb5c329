"""`python -m bench [NAME ...]`: run the benchmarks (all by default)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("stack", "render", "intake", "pipeline")


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {unknown}; choose from {BENCHMARKS}", file=sys.stderr)
        return 2
    for name in names:
        importlib.import_module(f"bench.{name}").run()
    from bench import plots

    for path in plots.main(names):
        print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
