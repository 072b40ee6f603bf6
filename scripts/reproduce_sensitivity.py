"""Regenerate the committed sensitivity data of a model (SmolLM2-135M by default; read by notebook 07).

Usage (from the repository root, single thread)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/reproduce_sensitivity.py [--model smollm2-135m]
        [--out data/results] [--loss-every 3] [--skip-loss] [--no-cache]

``--model gemma3-270m`` writes the same files with its name (notebook 10 repeats the analysis on it).

Writes into ``--out`` (default ``data/results``), each CSV atomically and with a
``<file>.json`` provenance sidecar (``acttail_lab.core.provenance.write_sidecar``):

- ``smollm2-135m_spectra_{ks,peak,median}.csv``: ``spectra.analyze(model, xmin=rule)``,
  one row per projection (210).
- ``smollm2-135m_cost_table.csv``: ``sensitivity.cost_table(model)`` with its defaults
  (12 sparsity levels, 2048 calibration tokens sampled with seed 0 from four
  512-token windows of Sense and Sensibility), 210 x 12 rows. These are the
  settings ``evaluation.evaluate_grid`` solves the ``surrogate-optimal`` / ``hybrid``
  strategies with.
- ``smollm2-135m_loss_increase.csv``: ``sensitivity.loss_increase_table`` on a
  SUBSET: every ``--loss-every``-th layer (default 3: layers 0, 3, ..., 27), all 7
  kinds, s = 0.5 and 0.8, two 256-token calibration windows (512 tokens);
  140 forwards, ~5-10 minutes on one CPU thread.
- ``smollm2-135m_correlations.csv``: ``sensitivity.spectral_correlations`` of
  alpha (xmin ks / peak / median), alpha_weighted, stable_rank and lambda_max
  against rel_error, rel_error_token (at 0.5, 0.8 and the curve mean) and
  loss_increase (at 0.5 and 0.8, on the subset), overall, within each
  projection kind and within each layer.

Floats are written with 6 significant digits (files stay well under 1 MB).
Everything is computed on the CALIBRATION split; the evaluation split is never read.
The cost and loss tables are cached by ``acttail_lab.measure.sensitivity`` (keyed by the
weights and token ids), so a re-run only recomputes what changed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from acttail_lab.core.cache import atomic_path  # noqa: E402
from acttail_lab.core.models import load_model, projection_table  # noqa: E402
from acttail_lab.core.provenance import write_sidecar  # noqa: E402
from acttail_lab.measure import sensitivity
from acttail_lab.report import correlations as correlations_report
from acttail_lab.report.correlations import COST_SETTINGS, LOSS_EVERY, LOSS_SETTINGS, SENSITIVITY_VALUES, loss_subset
from acttail_lab.spectral import spectra
from acttail_lab.spectral.tails import XMIN_RULES

MODEL = "smollm2-135m"
CORPUS = "austen"
SEED = 0
FLOAT_FORMAT = "%.6g"
REPO = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(f"[reproduce_sensitivity] {message}", flush=True)


def write_csv(frame: pd.DataFrame, path: Path, started: float, model: str = MODEL, **settings) -> None:
    """``frame`` as CSV (6 significant digits, atomic) plus its provenance sidecar."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format=FLOAT_FORMAT)
    write_sidecar(path, seed=SEED, device="cpu", model=model, corpus=CORPUS, rows=len(frame),
                  seconds=round(time.perf_counter() - started, 1), **settings)
    log(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} "
        f"({len(frame)} rows, {path.stat().st_size / 1024:.0f} KiB)")


def spectra_tables(lm, out: Path, cache: bool, model: str = MODEL) -> dict[str, pd.DataFrame]:
    tables = {}
    for rule in XMIN_RULES:
        started = time.perf_counter()
        tables[rule] = spectra.analyze(lm, xmin=rule, cache=cache, progress=True)
        write_csv(tables[rule], out / f"{model}_spectra_{rule}.csv", started, model, xmin_rule=rule,
                  description="spectra.analyze(model, xmin=rule): eigenvalues of W^T W (float64, Gram + eigh), "
                              "power-law fit per projection")
    return tables


def run(out: Path, loss_every: int, skip_loss: bool, cache: bool, model: str = MODEL) -> None:
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    lm = load_model(model)
    log(f"loaded {model} from {lm.source} in {time.perf_counter() - started:.1f} s")

    tables = spectra_tables(lm, out, cache, model)

    started = time.perf_counter()
    cost = sensitivity.cost_table(lm, corpus=CORPUS, seed=SEED, cache=cache, progress=True, **COST_SETTINGS)
    write_csv(cost, out / f"{model}_cost_table.csv", started, model, split="calibration",
              **{k: list(v) if isinstance(v, tuple) else v for k, v in COST_SETTINGS.items()},
              description="sensitivity.cost_table: relative output error of TopK on each projection's own "
                          "input (all others dense), calibration split (Sense and Sensibility)")

    loss = None
    if not skip_loss:
        started = time.perf_counter()
        names = loss_subset(projection_table(lm.model), loss_every)
        log(f"loss increase: {len(names)} projections x {len(LOSS_SETTINGS['sparsities'])} levels "
            f"(layers 0, {loss_every}, {2 * loss_every}, ...; all 7 kinds)")
        loss = sensitivity.loss_increase_table(lm, names=names, corpus=CORPUS, cache=cache, progress=True,
                                               **LOSS_SETTINGS)
        layers = sorted(loss["layer"].unique().tolist())
        write_csv(loss, out / f"{model}_loss_increase.csv", started, model, split="calibration",
                  subset=f"layers {layers} (one in {loss_every}), all 7 kinds", layers=layers,
                  **{k: list(v) if isinstance(v, tuple) else v for k, v in LOSS_SETTINGS.items()},
                  description="sensitivity.loss_increase_table: mean calibration NLL (nats) with only that "
                              "projection TopK-sparsified, minus the dense NLL")

    started = time.perf_counter()
    correlations = correlations_report.sensitivity_correlations(tables, cost, loss)
    write_csv(correlations, out / f"{model}_correlations.csv", started, model,
              metrics=list(correlations_report.SPECTRAL_METRICS), xmin_rules=list(XMIN_RULES),
              values=list(SENSITIVITY_VALUES) + ([] if loss is None else ["loss_increase"]),
              description="Spearman rho of spectral metrics vs measured sensitivity, grouped all / within "
                          "projection kind (across layers) / within layer (across kinds); lambda_max ranks "
                          "exactly as the spectral norm does")
    overall = correlations[(correlations["group_by"] == "all") & (correlations["metric"] == "alpha")]
    for row in overall.itertuples():
        log(f"rho(alpha[{row.rule}], {row.sensitivity}) = {row.rho:+.3f} (n={row.n})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=MODEL, help="built-in model name (default smollm2-135m)")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "results", help="output folder")
    parser.add_argument("--loss-every", type=int, default=LOSS_EVERY,
                        help=f"loss increase on every N-th layer (default {LOSS_EVERY})")
    parser.add_argument("--skip-loss", action="store_true", help="skip the (slow) loss-increase table")
    parser.add_argument("--no-cache", action="store_true", help="recompute instead of reading the caches")
    args = parser.parse_args(argv)
    if args.loss_every < 1:
        parser.error("--loss-every must be at least 1")
    started = time.perf_counter()
    run(args.out.resolve(), args.loss_every, args.skip_loss, cache=not args.no_cache, model=args.model)
    log(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
