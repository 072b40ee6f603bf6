"""Regenerate the plain-vs-FARMS alpha tables of SmolLM2-135M (+ .json sidecars).

* ``smollm2-135m_farms_spectra.csv``: ``spectra.analyze(model, estimator="farms")`` (ks xmin rule, FARMS
  defaults: square windows of the narrowest projection's width, 192, on a 10 x 10 grid), one row per
  projection, the same columns as ``smollm2-135m_spectra_ks.csv``;
* ``smollm2-135m_alpha_estimators.csv``: per (source, estimator, kind) the mean / median / std of alpha
  and the kind's rank, for SmolLM2 (plain = the committed ks spectra's estimator) and for synthetic
  heavy-tailed matrices (Student-t entries, tail index 2.5 / 3 / 3.5) at 1:1 and 1:2.67, three draws each;
* ``smollm2-135m_alpha_estimator_correlations.csv``: Spearman rho of each estimator's alpha against the
  committed TopK output error (``smollm2-135m_cost_table.csv``) and loss increase
  (``smollm2-135m_loss_increase.csv``), over all projections and within each kind.

Usage:  python scripts/reproduce_alpha_estimators.py [--out DIR]   (about a minute; spectra are cached)
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd
import torch

from acttail_lab.core.models import load_model
from acttail_lab.core.paths import result_path
from acttail_lab.core.results_io import load_table, write_results
from acttail_lab.report.alpha_estimators import (
    estimator_conclusions,
    estimator_correlations,
    kind_alpha_table,
    synthetic_aspect_table,
)
from acttail_lab.spectral.spectra import analyze

MODEL = "smollm2-135m"
TAIL_INDICES = (2.5, 3.0, 3.5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder (default data/results)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    command = "python scripts/reproduce_alpha_estimators.py " + " ".join(argv or sys.argv[1:])
    out = {name: result_path(name, MODEL, args.out) for name in
           ("farms_spectra", "alpha_estimators", "alpha_estimator_correlations")}
    lm = load_model(MODEL)
    tables = {"plain": analyze(lm.model, xmin="ks", progress=False),
              "farms": analyze(lm.model, xmin="ks", estimator="farms", progress=True)}
    common = dict(seed=0, device="cpu", command=command, model=MODEL)
    write_results(tables["farms"], out["farms_spectra"], **common, xmin_rule="ks", estimator="farms",
                  farms=tables["farms"].attrs["farms"])
    kinds = pd.concat([kind_alpha_table(tables, MODEL),
                       synthetic_aspect_table(TAIL_INDICES, short=384, long=1024, seeds=3, rows=128, windows=8)],
                      ignore_index=True)
    write_results(kinds, out["alpha_estimators"], **common, xmin_rule="ks", farms=tables["farms"].attrs["farms"],
                  synthetic="Student-t entries, 384x384 and 384x1024, seeds 0-2 (+100 for the wide), "
                            "FARMS windows 128x128 on an 8x8 grid")
    cost = load_table(result_path("cost_table", MODEL))
    loss = load_table(result_path("loss_increase", MODEL))
    corr = estimator_correlations(tables, cost, loss)
    write_results(corr, out["alpha_estimator_correlations"], **common, xmin_rule="ks",
                  sensitivity="committed smollm2-135m_cost_table.csv and smollm2-135m_loss_increase.csv "
                              "(calibration text)")
    for line in estimator_conclusions(kinds, corr, MODEL):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
