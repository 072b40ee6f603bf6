"""Regenerate the key figures under docs/figures/ from the committed CSVs in data/results/ (no model, seconds).

Each figure is written as <name>.png and <name>.json (the arrays it plots, which
tests/test_figures.py compares with a rebuild). The list of figures, their captions and
the notebook that explores each is acttail_lab.plots.figures.FIGURES (docs/gallery.md).
Usage:  python scripts/make_figures.py            (write every figure)
        python scripts/make_figures.py --check    (exit 1 if a committed figure is out of date)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

from acttail_lab.plots import figures  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "figures"


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = figures.stale_figures(OUT)
        print("up to date" if not stale else f"out of date: {', '.join(stale)} (run: make figures)")
        return 1 if stale else 0
    for path in figures.write_figures(OUT):
        print(f"{path.relative_to(OUT.parent.parent)}  {path.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
