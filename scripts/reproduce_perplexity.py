"""Regenerate data/results/perplexity_<model>.csv (+ _windows.csv, + .json sidecars).

Perplexity on the evaluation split of the built-in Austen corpus (*Pride and Prejudice*; 512-token
windows, protocol "all": every token's input is sparsified), dense and for each allocation strategy at
the model's targets (parameter-weighted TopK activation sparsity), every row on the same windows.
Alphas use AlphaPruning's xmin_peak rule (the default); rows of the KS tier name their rule in the label
(``acttail-ks``, ``acttail-block[xmin=ks]``). surrogate-optimal / hybrid are solved from the
calibration cost table (*Sense and Sensibility*), teal-greedy and teal-greedy-fine from TEAL's greedy
block path on the same text (fine: per-projection steps of at most 0.05).

* smollm2-135m: 16384 tokens, 50-80%, the full strategy set (:data:`TIERS`).
* gemma3-270m: 8192 tokens, 40-80%, the cross-model set (:data:`CROSS_MODEL`).
* qwen2.5-coder-1.5b: 8192 tokens, 50/70/80%, one stage per tier (TopK, WINA, fine greedy path, rotation),
  so that ``scripts/stage_costs.py`` can time each stage as its own process (``--tiers N`` re-reads the
  earlier tiers from the row cache).

Every row is cached (content-keyed), so an interrupted run resumes where it stopped; the CSV is
rewritten after each tier. ``--tier N`` runs tier N alone and adds its rows to the table already at ``--out``
(which must hold tiers 1..N-1 on the same tokens and windows; its sidecar's provenance is kept under
``earlier_tiers``), so a costly tier can be made in a later session without remaking the earlier rows; from an
empty cache ``--tiers N`` makes every row. Usage:
    python scripts/reproduce_perplexity.py [--model smollm2-135m] [--tokens N] [--out FILE] [--tiers N | --tier N]
"""
from __future__ import annotations

import argparse
import sys
import time

import pandas as pd
import torch

from acttail_lab.core.models import load_model
from acttail_lab.core.paths import result_path
from acttail_lab.measure.grid import evaluate_grid
from acttail_lab.measure.grid_tables import earlier_provenance, read_grid_scored_on, write_grid

CROSS_MODEL = ("uniform", "acttail", "acttail-ks", "acttail-block", "acttail[fit=block-mean]", "shuffled",
               "acttail-rev", "teal-greedy", "teal-greedy-fine", "rotated-uniform")
"""The strategies every model's grid has (the cross-model table compares these)."""
TIERS = {
    # (xmin rule, strategies, targets) in priority order
    "smollm2-135m": (
        ("peak", ("uniform", "acttail", "acttail-block", "shuffled", "acttail-rev", "teal-greedy",
                  "teal-greedy-fine", "surrogate-optimal", "teal-kind", "hybrid"), (0.5, 0.6, 0.7, 0.8)),
        ("ks", ("acttail-ks", "acttail-block", "shuffled", "acttail-rev", "acttail-block[direction=alpha_down]",
                "acttail-eps0.1", "acttail-eps0.5", "acttail-rank"), (0.5, 0.6, 0.7, 0.8)),
        ("peak", ("acttail[fit=block-mean]", "rotated-uniform"), (0.5, 0.6, 0.7, 0.8)),
    ),
    "gemma3-270m": (
        ("peak", CROSS_MODEL, (0.4, 0.5, 0.6, 0.7)),
        ("peak", CROSS_MODEL, (0.8,)),  # uniform at 80% is 487 against 25.8 dense: not collapsed
    ),
    "qwen2.5-coder-1.5b": (  # a float32 row of 8192 tokens costs 5-8 CPU minutes: the set only
        ("peak", ("uniform", "acttail", "acttail-ks", "acttail-block"), (0.5, 0.7, 0.8)),
        ("peak", ("wina",), (0.5, 0.7, 0.8)),
        ("peak", ("teal-greedy-fine",), (0.5, 0.7, 0.8)),
        ("peak", ("rotated-uniform",), (0.5, 0.7, 0.8)),
    ),
}
TOKENS = {"smollm2-135m": 16384, "gemma3-270m": 8192, "qwen2.5-coder-1.5b": 8192}


def earlier_tiers(out, tier: int, tokens: int, window: int) -> pd.DataFrame:
    """The rows of the table at ``out`` (:func:`read_grid_scored_on`: with their per-window losses), for ``--tier``.

    Raises SystemExit naming the fix when the table is missing, holds fewer than ``tier`` - 1 tiers, or was
    scored on other tokens or windows (its rows would not pair with the new ones).
    """
    try:
        table = read_grid_scored_on(out, tokens, window)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"--tier {tier} adds to the table at {out}: {error} Fix: run --tiers {tier} (every tier "
                         "from the cache), or pass the matching --tokens/--window.") from None
    done = int((table.attrs["provenance"] or {}).get("settings", {}).get("tiers_done", 0))
    if done < tier - 1:
        raise SystemExit(f"{out} holds tiers 1..{done}; --tier {tier} needs tiers 1..{tier - 1}. "
                         f"Fix: run --tiers {tier}.")
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", choices=sorted(TIERS))
    parser.add_argument("--tokens", type=int, default=None, help="default: 16384 (SmolLM2), 8192 (Gemma)")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--out", default=None, help="default: data/results/perplexity_<model>.csv")
    tier_options = parser.add_mutually_exclusive_group()
    tier_options.add_argument("--tiers", type=int, default=None, help="run only the first N tiers")
    tier_options.add_argument("--tier", type=int, default=None,
                              help="run only tier N and add its rows to the table at --out (tiers 1..N-1)")
    args = parser.parse_args(argv)
    tokens = args.tokens or TOKENS[args.model]
    out = args.out or str(result_path("perplexity", args.model))
    tiers = list(enumerate(TIERS[args.model][:args.tiers]))
    parts, earlier = [], {}
    if args.tier is not None:
        if not 2 <= args.tier <= len(TIERS[args.model]):
            parser.error(f"--tier must be 2..{len(TIERS[args.model])} for {args.model} (tier 1 is --tiers 1)")
        table = earlier_tiers(out, args.tier, tokens, args.window)  # before the model loads
        earlier = {"earlier_tiers": earlier_provenance(table)}
        parts = [table[table["strategy"].isin(["dense", *_strategies(args.model, args.tier - 1)])]]
        tiers = [(args.tier - 1, TIERS[args.model][args.tier - 1])]
    torch.manual_seed(0)
    start = time.time()
    lm = load_model(args.model)
    for number, (rule, strategies, targets) in tiers:
        part = evaluate_grid(lm, strategies=strategies, sparsities=targets, tokens=tokens, window=args.window,
                             seed=0, xmin=rule, include_dense=number == 0, log_rows=True)
        parts.append(part.drop(columns=["cached"]))
        runs = pd.concat(parts, ignore_index=True)
        runs = runs.drop_duplicates(["strategy", "sparsity"], keep="first").reset_index(drop=True)
        write_grid(runs, out, seed=0, device="cpu",
                   command="python scripts/reproduce_perplexity.py " + " ".join(argv or sys.argv[1:]),
                   model=args.model, corpus="austen", split="evaluation", tokens=tokens, window=args.window,
                   protocol="all", tiers_done=number + 1, **earlier,
                   note="alphas: xmin_peak unless the label names another rule ([xmin=ks], acttail-ks)")
        print(f"wrote {out} ({len(runs)} rows, tier {number + 1}) at {time.time() - start:.0f} s", flush=True)
    return 0


def _strategies(model: str, tiers: int) -> set[str]:
    """Every strategy label of the first ``tiers`` tiers of ``model``."""
    return {strategy for _, strategies, _ in TIERS[model][:tiers] for strategy in strategies}


if __name__ == "__main__":
    sys.exit(main())
