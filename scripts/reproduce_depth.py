"""Regenerate the committed depth-utilisation data of SmolLM2-135M (read by notebook 06).

Usage (from the repository root, single thread)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/reproduce_depth.py [--out data/results] [--no-cache]
        [--skip-tokens 8192] [--profile-tokens 4096]

Writes into ``--out`` (default ``data/results``), each CSV atomically with a
``<file>.json`` provenance sidecar (``evaluation.write_results``):

- ``smollm2-135m_depth.csv``: ``depth.depth_table``, one row per decoder layer (30):
  the dense residual-stream profile (var_in, var_out, growth, medians, rel_update,
  cos_in_out, block_influence) on ``--profile-tokens`` evaluation tokens, the
  Jacobian identity gap (2 probes, eps 1e-2) on 2 x 256 evaluation tokens, the
  skip-layer perplexity on ``--skip-tokens`` evaluation tokens (512-token windows),
  the mean alpha (xmin ks) and the per-layer budgets of acttail and acttail-block
  at 50% and 70%.
- ``smollm2-135m_depth_variance.csv``: ``depth.variance_under_sparsity``, the same
  profile under dense, uniform and acttail at 50% and 70% (5 conditions x 30 layers).

All text is the EVALUATION split (Pride and Prejudice). Skip-layer rows are cached
per layer (``cache_dir("depth")``), so an interrupted run resumes; the rest takes
about two minutes. The whole run: ~15-25 minutes on one CPU thread.
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
import torch  # noqa: E402

from acttail_lab.core.corpus import corpus_text, token_windows  # noqa: E402
from acttail_lab.core.models import load_model  # noqa: E402
from acttail_lab.core.results_io import write_results  # noqa: E402
from acttail_lab.measure import depth  # noqa: E402
from acttail_lab.report import depth as depth_report
from acttail_lab.spectral.spectra import analyze  # noqa: E402

MODEL = "smollm2-135m"
CORPUS, SPLIT = "austen", "evaluation"
SEED = 0
WINDOW = 512
JACOBIAN = dict(window=256, n_tokens=512, n_probes=2, eps=1e-2)
STRATEGIES, TARGETS = ("acttail", "acttail-block"), (0.5, 0.7)
CONDITIONS = depth.DEFAULT_CONDITIONS
XMIN = "ks"
REPO = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(f"[reproduce_depth] {message}", flush=True)


def run(out: Path, skip_tokens: int, profile_tokens: int, cache: bool) -> None:
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(1)
    started = time.perf_counter()
    lm = load_model(MODEL)
    text = corpus_text(CORPUS, SPLIT)
    windows = token_windows(lm.tokenizer, text, window=WINDOW, n_tokens=skip_tokens)
    profile_windows = windows[: max(1, profile_tokens // WINDOW)]
    jacobian_windows = token_windows(lm.tokenizer, text, window=JACOBIAN["window"], n_tokens=JACOBIAN["n_tokens"])
    spectra = analyze(lm, xmin=XMIN, progress=False)
    log(f"loaded {MODEL}; skip-layer on {windows.numel()} tokens, profiles on {profile_windows.numel()}, "
        f"Jacobian on {jacobian_windows.numel()} ({time.perf_counter() - started:.0f} s)")

    table = depth.depth_table(lm, windows, profile_windows=profile_windows, jacobian_windows=jacobian_windows,
                              spectra=spectra, strategies=STRATEGIES, targets=TARGETS, xmin=XMIN,
                              n_probes=JACOBIAN["n_probes"], eps=JACOBIAN["eps"], seed=SEED, cache=cache)
    common = dict(seed=SEED, device="cpu", model=MODEL, corpus=CORPUS, split=SPLIT,
                  command="python scripts/reproduce_depth.py")
    path = write_results(table, out / f"{MODEL}_depth.csv", **common, window=WINDOW, skip_tokens=int(windows.numel()),
                         profile_tokens=int(profile_windows.numel()), jacobian=JACOBIAN, xmin_rule=XMIN,
                         strategies=list(STRATEGIES), targets=list(TARGETS), rows=len(table),
                         seconds=round(time.perf_counter() - started, 1),
                         description="depth.depth_table: per decoder layer, residual-stream variance profile "
                                     "(dense), Jacobian identity gap, skip-layer perplexity (layer output := "
                                     "input), mean alpha and ActTail's per-layer budget")
    log(f"wrote {path} ({len(table)} rows)")

    started = time.perf_counter()
    variance = depth.variance_under_sparsity(lm, profile_windows, CONDITIONS, spectra=spectra, xmin=XMIN)
    path = write_results(variance, out / f"{MODEL}_depth_variance.csv", **common, window=WINDOW,
                         profile_tokens=int(profile_windows.numel()), conditions=list(CONDITIONS), xmin_rule=XMIN,
                         protocol="all", rows=len(variance), seconds=round(time.perf_counter() - started, 1),
                         description="depth.variance_under_sparsity: layer_profile under dense and TopK "
                                     "allocations (uniform, acttail) at 50% and 70%")
    log(f"wrote {path} ({len(variance)} rows)")
    for line in depth_report.depth_conclusions(table, variance):
        log(line)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "data" / "results", help="output folder")
    parser.add_argument("--skip-tokens", type=int, default=8192, help="evaluation tokens for skip-layer perplexity")
    parser.add_argument("--profile-tokens", type=int, default=4096, help="evaluation tokens for variance profiles")
    parser.add_argument("--no-cache", action="store_true", help="recompute the skip-layer rows")
    args = parser.parse_args(argv)
    if args.skip_tokens < WINDOW or args.profile_tokens < WINDOW:
        parser.error(f"--skip-tokens and --profile-tokens must be at least one window ({WINDOW})")
    started = time.perf_counter()
    run(args.out.resolve(), args.skip_tokens, args.profile_tokens, cache=not args.no_cache)
    log(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
