"""Regenerate data/results/perplexity_smollm2-135m.csv (+ .json sidecar).

Perplexity of SmolLM2-135M on 16384 tokens of Pride and Prejudice (the evaluation
split; 512-token windows, protocol "all": every token's input is sparsified),
dense and for each allocation strategy at 50/60/70/80% parameter-weighted
TopK activation sparsity. Alphas use the KS xmin rule; the "-peak" rows repeat
the alpha strategies with AlphaPruning's xmin_peak rule. optimal / hybrid are
solved from the calibration cost table (Sense and Sensibility).

Every row is cached (content-keyed), so an interrupted run resumes where it
stopped. Usage:  python scripts/reproduce_perplexity.py [--tokens 16384] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from acttail_lab.evaluation import evaluate_grid, write_results
from acttail_lab.models import load_model

ROOT = Path(__file__).resolve().parent.parent
KS_STRATEGIES = ("uniform", "acttail", "acttail-block", "shuffled", "acttail-rev",
                 "acttail-block[direction=alpha_down]", "optimal", "teal-kind", "hybrid",
                 "acttail-eps0.1", "acttail-eps0.5", "acttail-rank")
PEAK_STRATEGIES = ("acttail", "acttail-block")
SPARSITIES = (0.5, 0.6, 0.7, 0.8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--out", default=str(ROOT / "data/results/perplexity_smollm2-135m.csv"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    start = time.time()
    lm = load_model("smollm2-135m")
    common = dict(sparsities=SPARSITIES, tokens=args.tokens, window=args.window, seed=0)
    ks = evaluate_grid(lm, strategies=KS_STRATEGIES, xmin="ks", **common)
    peak = evaluate_grid(lm, strategies=PEAK_STRATEGIES, xmin="peak", include_dense=False, **common)
    peak["strategy"] = peak["strategy"] + "-peak"
    df = pd.concat([ks, peak], ignore_index=True).drop(columns=["cached"])
    write_results(df, args.out, seed=0, device="cpu",
                  command="python scripts/reproduce_perplexity.py " + " ".join(argv or sys.argv[1:]),
                  model="smollm2-135m", corpus="austen", split="evaluation", tokens=args.tokens,
                  window=args.window, protocol="all", note="alphas: ks rule unless the label ends in -peak")
    print(f"wrote {args.out} ({len(df)} rows) in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
