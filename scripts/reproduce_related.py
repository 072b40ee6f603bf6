"""Regenerate the related-methods results of notebook 05 (rotation, thresholds, CATS, FFN-only).

Stages (all on SmolLM2-135M; calibration = 8192 tokens of Sense and Sensibility,
evaluation = Pride and Prejudice, 512-token windows, protocol "all"):

* ``perplexity`` -> data/results/perplexity_related_smollm2-135m.csv: dense, then
  uniform, acttail (TopK), rotated-uniform, rotated-acttail (LaRoSA rotation + TopK),
  teal-threshold, acttail-threshold (calibrated thresholds), cats (gate threshold,
  MLP only), ffn-threshold and ffn-topk (FFN only) at 40/50/60/70/80% on 16384
  evaluation tokens (uniform and rotated-uniform also at 20/30%), in the priority
  tiers of TIERS. Rows are cached, so an interrupted run resumes.
* ``spread`` -> data/results/smollm2-135m_threshold_spread.csv: per projection, the
  realised per-token sparsity (mean, std, p05, p95) of teal-threshold, ffn-threshold
  and cats at 50% and 80% (4096 evaluation tokens).
* ``overlap`` -> data/results/smollm2-135m_active_sets.csv: overlap of FFN active sets
  between consecutive tokens and adjacent layers (``acttail_lab.measure.active_sets``).

Usage:  python scripts/reproduce_related.py [--stages perplexity,spread,overlap] [--tokens 16384]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "data/results"
SPARSITIES = (0.4, 0.5, 0.6, 0.7, 0.8)
LOW = (0.2, 0.3)
TIERS = (
    (("uniform", "acttail", "rotated-uniform", "teal-threshold", "cats", "ffn-threshold"), SPARSITIES),
    (("rotated-acttail",), SPARSITIES),
    (("ffn-topk", "acttail-threshold"), SPARSITIES),
    (("uniform", "rotated-uniform"), LOW),
)
"""(strategies, targets) in priority order; the CSV is rewritten after each tier (``--tiers N`` runs the first N).
The last tier puts uniform and rotated-uniform at 20/30% so that CATS and FFN-only runs (which skip at most ~40% of
all weights) have all-projection runs to compare with at the same realised sparsity."""
CALIBRATION_TOKENS = 8192


def run_perplexity(lm, args, command: str) -> None:
    from acttail_lab.measure.grid import evaluate_grid
    from acttail_lab.measure.grid_tables import write_grid

    parts = []
    for number, (strategies, sparsities) in enumerate(TIERS[:args.tiers]):
        part = evaluate_grid(lm, strategies=strategies, sparsities=sparsities, tokens=args.tokens, window=512,
                             seed=0, include_dense=number == 0, calibration_tokens=CALIBRATION_TOKENS,
                             log_rows=True)
        parts.append(part)
        df = pd.concat(parts, ignore_index=True).drop(columns=["cached"])
        write_grid(df, OUT / "perplexity_related_smollm2-135m.csv", seed=0, device="cpu", command=command,
                      model="smollm2-135m", corpus="austen", split="evaluation", tokens=args.tokens, window=512,
                      protocol="all", calibration="austen/calibration (Sense and Sensibility)",
                      calibration_tokens=CALIBRATION_TOKENS, tiers_done=number + 1,
                      note="sparsity = target over the kinds that get a budget; realised_sparsity = fraction "
                           "of all projection weights skipped")
        print(f"wrote perplexity_related ({len(df)} rows, tier {number + 1})", flush=True)


def run_spread(lm, command: str) -> None:
    from acttail_lab.core.results_io import write_results
    from acttail_lab.measure.related import threshold_spread

    df = threshold_spread(lm, ("teal-threshold", "ffn-threshold", "cats"), (0.5, 0.8), tokens=4096,
                          calibration_tokens=CALIBRATION_TOKENS)
    write_results(df, OUT / "smollm2-135m_threshold_spread.csv", seed=0, device="cpu", command=command,
                  model="smollm2-135m", split="evaluation", tokens=4096, window=512,
                  calibration_tokens=CALIBRATION_TOKENS)
    print(f"wrote threshold_spread ({len(df)} rows)", flush=True)


def run_overlap(lm, command: str) -> None:
    from acttail_lab.core.results_io import write_results
    from acttail_lab.measure.active_sets import active_set_overlap

    df = active_set_overlap(lm, sparsities=SPARSITIES, tokens=2048, calibration_tokens=CALIBRATION_TOKENS)
    write_results(df, OUT / "smollm2-135m_active_sets.csv", seed=0, device="cpu", command=command,
                  model="smollm2-135m", split="evaluation", tokens=2048, window=512,
                  calibration_tokens=CALIBRATION_TOKENS)
    print(f"wrote active_sets ({len(df)} rows)", flush=True)


def main(argv=None) -> int:
    from acttail_lab.core.models import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default="perplexity,spread,overlap")
    parser.add_argument("--tokens", type=int, default=16384, help="evaluation tokens of the perplexity stage")
    parser.add_argument("--tiers", type=int, default=len(TIERS), help="perplexity stage: run only the first N tiers")
    args = parser.parse_args(argv)
    command = "python scripts/reproduce_related.py " + " ".join(argv if argv is not None else sys.argv[1:])
    torch.manual_seed(0)
    start = time.time()
    lm = load_model("smollm2-135m")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    for stage in stages:
        if stage == "perplexity":
            run_perplexity(lm, args, command)
        elif stage == "spread":
            run_spread(lm, command)
        elif stage == "overlap":
            run_overlap(lm, command)
        else:
            parser.error(f"unknown stage {stage!r}")
        print(f"stage {stage} done at {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
