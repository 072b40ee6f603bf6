"""Regenerate data/results/perplexity_smollm2-135m.csv (+ .json sidecar).

Perplexity of SmolLM2-135M on 16384 tokens of Pride and Prejudice (the evaluation
split; 512-token windows, protocol "all": every token's input is sparsified),
dense and for each allocation strategy at 50/60/70/80% parameter-weighted
TopK activation sparsity. Alphas use the KS xmin rule; the "-peak" rows repeat
the alpha strategies with AlphaPruning's xmin_peak rule. optimal / hybrid are
solved from the calibration cost table (Sense and Sensibility), teal-greedy
from TEAL's greedy block path on the same text.

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

from acttail_lab.core.models import load_model
from acttail_lab.measure.grid import evaluate_grid, write_grid

ROOT = Path(__file__).resolve().parent.parent
# (xmin rule, strategies) in priority order; the CSV is rewritten after each tier,
# so a run cut short still leaves every finished tier on disk.
TIERS = (
    ("ks", ("uniform", "acttail", "acttail-block", "shuffled", "acttail-rev", "optimal", "teal-kind")),
    ("ks", ("acttail-block[direction=alpha_down]", "hybrid", "acttail-eps0.1", "acttail-eps0.5")),
    ("peak", ("acttail", "acttail-block")),
    ("ks", ("acttail-rank",)),
    ("ks", ("teal-greedy",)),
)
SPARSITIES = (0.5, 0.6, 0.7, 0.8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--out", default=str(ROOT / "data/results/perplexity_smollm2-135m.csv"))
    parser.add_argument("--tiers", type=int, default=len(TIERS), help="run only the first N tiers")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    start = time.time()
    lm = load_model("smollm2-135m")
    common = dict(sparsities=SPARSITIES, tokens=args.tokens, window=args.window, seed=0, log_rows=True)
    parts = []
    for number, (rule, strategies) in enumerate(TIERS[:args.tiers]):
        part = evaluate_grid(lm, strategies=strategies, xmin=rule, include_dense=number == 0, **common)
        if rule != "ks":
            part["strategy"] = part["strategy"] + f"-{rule}"
        parts.append(part)
        df = pd.concat(parts, ignore_index=True).drop(columns=["cached"])
        write_grid(df, args.out, seed=0, device="cpu",
                      command="python scripts/reproduce_perplexity.py " + " ".join(argv or sys.argv[1:]),
                      model="smollm2-135m", corpus="austen", split="evaluation", tokens=args.tokens,
                      window=args.window, protocol="all", tiers_done=number + 1,
                      note="alphas: ks rule unless the label ends in -peak")
        print(f"wrote {args.out} ({len(df)} rows, tier {number + 1}) at {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
