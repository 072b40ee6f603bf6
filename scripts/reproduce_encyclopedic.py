"""Regenerate data/results/perplexity_encyclopedic_<model>.csv (+ _windows.csv, + .json sidecars).

Does the Austen result hold on another register? Perplexity on the built-in ``encyclopedic`` corpus
(de-duplicated Wikipedia paragraphs; evaluation half of the paragraph split), dense and for uniform,
acttail (xmin_peak alphas), acttail-ks, acttail-block, ``acttail[fit=block-mean]``, teal-greedy and
teal-greedy-fine (the upper reference) at 50% and 70% parameter-weighted TopK sparsity: 16384 evaluation
tokens for SmolLM2, 8192 for Gemma and Qwen2.5-Coder-1.5B (whose rows cost 5-8 CPU minutes each: it runs
the smaller set :data:`STRATEGIES_BY_MODEL` names), 512-token windows, protocol "all", the same windows for every row (so
the per-window losses pair). The greedy paths are measured on the corpus's own calibration half. Every row
is cached (content-keyed), so an interrupted run resumes. Usage:
    python scripts/reproduce_encyclopedic.py [--model smollm2-135m] [--tokens N] [--strategies a,b] [--out FILE]

``--strategies`` runs a subset (dense always) and writes it as the table: a table committed in pieces (a 1.5B model's
greedy path takes hours) says which in its sidecar's command; the full command then replays those rows.
``--add`` (with ``--strategies``) runs only those strategies and adds their rows to the table already at ``--out``
(same tokens and windows; rows of the same strategies replaced, the earlier sidecar kept under ``earlier_rows``),
so a piece made in a later session, on an empty cache, does not remake the rows before it.
"""
from __future__ import annotations

import argparse
import sys
import time

import pandas as pd
import torch

from acttail_lab.core.paths import result_path
from acttail_lab.measure.grid import evaluate_grid
from acttail_lab.measure.grid_tables import earlier_provenance, read_grid_scored_on, write_grid

MODEL = "smollm2-135m"
CORPUS = "encyclopedic"
STRATEGIES = ("uniform", "acttail", "acttail-ks", "acttail-block", "acttail[fit=block-mean]", "teal-greedy",
              "teal-greedy-fine")
STRATEGIES_BY_MODEL = {"qwen2.5-coder-1.5b": ("uniform", "acttail", "acttail-block", "teal-greedy-fine")}
"""Models that run fewer strategies than :data:`STRATEGIES` (dense is always included)."""
TOKENS = {"smollm2-135m": 16384, "gemma3-270m": 8192, "qwen2.5-coder-1.5b": 8192}
SPARSITIES = (0.5, 0.7)


def earlier_rows(out, strategies, tokens: int, window: int) -> pd.DataFrame:
    """For ``--add``: the rows of the table at ``out`` (:func:`read_grid`) other than ``strategies``.

    Raises SystemExit naming the fix when it is missing or was scored on other tokens or windows."""
    try:
        table = read_grid_scored_on(out, tokens, window)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"--add adds rows to the table at {out}: {error} Fix: pass the matching --tokens/--window, "
                         "or drop --add.") from None
    kept = table[~table["strategy"].isin(strategies)].reset_index(drop=True)
    kept.attrs.update(table.attrs)
    return kept


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL, help="built-in model name")
    parser.add_argument("--tokens", type=int, default=None, help="default: 16384 (SmolLM2), 8192 (others)")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--strategies", default=None,
                        help="comma-separated subset (default: the model's set, STRATEGIES_BY_MODEL or STRATEGIES)")
    parser.add_argument("--out", default=None, help="default: data/results/perplexity_encyclopedic_<model>.csv")
    parser.add_argument("--add", action="store_true",
                        help="add the --strategies rows to the table at --out instead of writing a new one")
    args = parser.parse_args(argv)
    if args.add and not args.strategies:
        parser.error("--add needs --strategies (the rows to add)")
    out = args.out or str(result_path("perplexity_encyclopedic", args.model))
    tokens = args.tokens or TOKENS.get(args.model, 16384)
    torch.manual_seed(0)
    start = time.time()
    strategies = (tuple(filter(None, args.strategies.split(","))) if args.strategies
                  else STRATEGIES_BY_MODEL.get(args.model, STRATEGIES))
    earlier = earlier_rows(out, strategies, tokens, args.window) if args.add else None  # before the model loads
    runs = evaluate_grid(args.model, strategies=strategies, sparsities=SPARSITIES, tokens=tokens,
                         window=args.window, corpus=CORPUS, seed=0, xmin="peak", include_dense=not args.add,
                         log_rows=True).drop(columns=["cached"])
    extra = {}
    if earlier is not None:
        extra = {"earlier_rows": earlier_provenance(earlier)}
        runs = pd.concat([earlier, runs], ignore_index=True)
    write_grid(runs, out, seed=0, device="cpu", **extra,
               command="python scripts/reproduce_encyclopedic.py " + " ".join(argv or sys.argv[1:]),
               model=args.model, corpus=CORPUS, split="evaluation", tokens=tokens, window=args.window,
               protocol="all", note="alphas: xmin_peak unless the label names another rule (acttail-ks); greedy paths on the "
                    "encyclopedic calibration half")
    print(f"wrote {out} ({len(runs)} rows) in {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
