"""Regenerate data/results/upper_reference_<model>.csv (+ _windows.csv, + .json sidecars).

Is the upper reference at least as good as uniform *by measurement on calibration text*? Perplexity on
the CALIBRATION split of the Austen corpus (*Sense and Sensibility*, the text the greedy paths are
measured on: their first 256 tokens are among these), dense and uniform, teal-greedy and
teal-greedy-fine at 40-80% parameter-weighted TopK sparsity: 8192 tokens, 512-token windows, protocol
"all", the same windows for every row. ``report.cross_model.calibration_check`` gives each change against
uniform with its paired-bootstrap interval. Every row is cached (content-keyed). Usage:
    python scripts/reproduce_upper_reference.py [--model smollm2-135m] [--tokens 8192] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from acttail_lab.core.paths import result_path
from acttail_lab.measure.grid import evaluate_grid
from acttail_lab.measure.grid_tables import write_grid

STRATEGIES = ("uniform", "teal-greedy", "teal-greedy-fine")
SPARSITIES = (0.4, 0.5, 0.6, 0.7, 0.8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="built-in model name")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--out", default=None, help="default: data/results/upper_reference_<model>.csv")
    args = parser.parse_args(argv)
    out = args.out or str(result_path("upper_reference", args.model))
    torch.manual_seed(0)
    start = time.time()
    runs = evaluate_grid(args.model, strategies=STRATEGIES, sparsities=SPARSITIES, tokens=args.tokens,
                         window=args.window, corpus="austen", split="calibration", seed=0, include_dense=True,
                         log_rows=True)
    write_grid(runs.drop(columns=["cached"]), out, seed=0, device="cpu",
               command="python scripts/reproduce_upper_reference.py " + " ".join(argv or sys.argv[1:]),
               model=args.model, corpus="austen", split="calibration", tokens=args.tokens, window=args.window,
               protocol="all", note="the calibration split: the greedy paths were measured on its first 256 tokens")
    print(f"wrote {out} ({len(runs)} rows) in {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
