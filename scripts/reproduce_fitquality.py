"""Regenerate data/results/perplexity_fitquality_<model>.csv (+ _windows.csv, + .json sidecars).

The effect of the alpha fit-quality option on a built-in model (default SmolLM2-135M): perplexity with ``acttail`` (every KS alpha
drives the min-max mapping), ``acttail-fit`` (``acttail[fit=winsorise]``: alphas of fits with fewer than
20 tail eigenvalues, ``tail_ok`` False or fragile are clipped to the reliable fits' range) and
``acttail[fit=block-mean]`` (those alphas replaced by their layer's mean reliable alpha), beside
``uniform`` and dense, at 50/60/70% parameter-weighted TopK sparsity. Same protocol as
``scripts/reproduce_perplexity.py``: 16384 tokens of Pride and Prejudice (evaluation split), 512-token
windows, protocol "all", KS xmin rule (the rule whose short tails the option is about; the labels say
``[xmin=ks]``); the same windows for every row, so the per-window losses pair.

Every row is cached (content-keyed), so an interrupted run resumes. Usage:
    python scripts/reproduce_fitquality.py [--model smollm2-135m] [--tokens 16384] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from acttail_lab.core.paths import result_path
from acttail_lab.measure.grid import evaluate_grid
from acttail_lab.measure.grid_tables import write_grid

MODEL = "smollm2-135m"
STRATEGIES = ("uniform", "acttail[fit=block-mean]", "acttail-fit", "acttail")  # most informative first
SPARSITIES = (0.5, 0.6, 0.7)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL, help="built-in model name")
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--out", default=None, help="default: data/results/perplexity_fitquality_<model>.csv")
    args = parser.parse_args(argv)
    out = args.out or str(result_path("perplexity_fitquality", args.model))
    torch.manual_seed(0)
    start = time.time()
    runs = evaluate_grid(args.model, strategies=STRATEGIES, sparsities=SPARSITIES, tokens=args.tokens,
                         window=args.window, seed=0, xmin="ks", include_dense=True)
    write_grid(runs.drop(columns=["cached"]), out, seed=0, device="cpu",
               command="python scripts/reproduce_fitquality.py " + " ".join(argv or sys.argv[1:]),
               model=args.model, corpus="austen", split="evaluation", tokens=args.tokens, window=args.window,
               protocol="all", note="alphas: ks rule; fit option: allocation/fit_quality.py (min_tail 20)")
    print(f"wrote {out} ({len(runs)} rows) in {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
