"""Regenerate data/results/perplexity_wina_farms_smollm2-135m.csv (+ .json sidecar, + per-window losses).

Perplexity of SmolLM2-135M with the same evaluation tokens, windows and protocol as the committed grid
(data/results/perplexity_smollm2-135m.csv: 16384 tokens of the evaluation split, 512-token windows,
protocol "all"), for the two additions of docs/method.md:

* WINA (``method=wina``: per-token TopK of ``|x| * ||W col||``) under uniform budgets (WINA as published),
  ActTail budgets and TEAL's greedy budgets, and on LaRoSA-rotated inputs (``rotated-wina``);
* ActTail (TopK) on FARMS alphas (``estimator=farms``), per projection and per block.

Alphas use the KS xmin rule (these rows were measured before the default became AlphaPruning's peak
rule), so the alpha-based labels say ``[xmin=ks]`` and pair with ``acttail-ks`` / ``acttail-block[xmin=ks]``
of the perplexity grid (``report.wina_runs.COUNTERPART``).

One tier per target, 50% and 70% first, then 60/40/80%; the CSV is rewritten after each tier and every
row is cached by content, so an interrupted run resumes. The dense row is repeated as the reference.

Usage:  python scripts/reproduce_wina_farms.py [--tokens 16384] [--tiers 5] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from acttail_lab.core.models import load_model
from acttail_lab.measure.grid import evaluate_grid
from acttail_lab.measure.grid_tables import write_grid

ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ("wina", "acttail-wina", "teal-greedy-wina", "acttail-farms", "acttail-block-farms", "rotated-wina")
"""Presets (``allocation.STRATEGY_PRESETS``), in priority order."""
TIERS = ((0.5,), (0.7,), (0.6,), (0.4,), (0.8,))
"""One target per tier, in priority order: the CSV is rewritten after each."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--out", default=str(ROOT / "data/results/perplexity_wina_farms_smollm2-135m.csv"))
    parser.add_argument("--tiers", type=int, default=len(TIERS), help="run only the first N tiers")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    start = time.time()
    lm = load_model("smollm2-135m")
    parts = []
    for number, sparsities in enumerate(TIERS[:args.tiers]):
        part = evaluate_grid(lm, strategies=STRATEGIES, sparsities=sparsities, tokens=args.tokens,
                             window=args.window, seed=0, xmin="ks", include_dense=number == 0)
        parts.append(part)
        df = pd.concat(parts, ignore_index=True).drop(columns=["cached"])
        df = df.sort_values(["strategy", "sparsity"], kind="stable", key=_dense_first).reset_index(drop=True)
        write_grid(df, args.out, seed=0, device="cpu",
                   command="python scripts/reproduce_wina_farms.py " + " ".join(argv or sys.argv[1:]),
                   model="smollm2-135m", corpus="austen", split="evaluation", tokens=args.tokens,
                   window=args.window, protocol="all", tiers_done=number + 1, sparsities_done=sorted(
                       float(s) for tier in TIERS[:number + 1] for s in tier),
                   note="alphas: ks rule; estimator=farms rows use FARMS window ESDs (spectral/farms.py defaults)")
        print(f"wrote {args.out} ({len(df)} rows, tier {number + 1}) at {time.time() - start:.0f} s", flush=True)
    return 0


def _dense_first(column: pd.Series) -> pd.Series:
    """Sort key: the dense row first, then strategies in :data:`STRATEGIES` order, then by sparsity."""
    if column.name != "strategy":
        return column
    order = {"dense": -1, **{name: i for i, name in enumerate(STRATEGIES)}}
    return column.map(lambda label: order[label.partition("[")[0]])


if __name__ == "__main__":
    sys.exit(main())
