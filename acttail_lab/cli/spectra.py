"""``acttail-lab spectra``: power-law alpha of every projection, written as a CSV table."""
from __future__ import annotations

import argparse

from ..core.paths import DEFAULT_MODEL

HELP = "Fit a power law to the eigenvalue spectrum of every projection; write one CSV row per projection."


def _xmin(value: str):
    """``ks``/``peak``/``median`` or a positive number."""
    from ..spectral.tails import XMIN_RULES

    if value in XMIN_RULES:
        return value
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--xmin must be one of {', '.join(XMIN_RULES)} or a positive number") from None
    if not number > 0:
        raise argparse.ArgumentTypeError("--xmin must be positive")
    return number


def _n_boot(value: str) -> int:
    """An integer of at least 2 (replicates per matrix for --robust)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--n-boot must be an integer, got {value!r}") from None
    if number < 2:
        raise argparse.ArgumentTypeError(f"--n-boot must be at least 2 (got {number}); e.g. --n-boot 200")
    return number


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="built-in name, Hugging Face id, folder or .gguf")
    parser.add_argument("--xmin", default="ks", type=_xmin, help="ks (full KS search), peak (AlphaPruning), "
                        "median, or a fixed number (default: ks)")
    parser.add_argument("--out", required=True, help="CSV file to write (atomically)")
    parser.add_argument("--robust", action="store_true", help="add a bootstrap interval and a fragile flag per alpha")
    parser.add_argument("--robust-method", default="bootstrap", choices=("bootstrap", "perturb"))
    parser.add_argument("--n-boot", type=_n_boot, default=200, help="replicates per matrix with --robust (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--no-cache", action="store_true", help="recompute the spectra even if cached")
    parser.add_argument("--estimator", default="plain", choices=("plain", "farms"),
                        help="plain: the whole matrix's ESD; farms: pooled ESD of fixed-aspect-ratio windows "
                             "(FARMS, default windows; docs/method.md) (default: plain)")


def run(args) -> int:
    from pathlib import Path

    from ..core.cache import atomic_path
    from ..core.errors import ActTailError
    from ..spectral.spectra import analyze

    if Path(args.out).is_dir():  # checked before the model loads
        raise ActTailError(f"--out {args.out} is a folder. Fix: pass a CSV file path, e.g. {args.out}/spectra.csv.")
    table = analyze(args.model, xmin=args.xmin, robust=args.robust, n_boot=args.n_boot, seed=args.seed,
                    robust_method=args.robust_method, dtype=args.dtype, device=args.device,
                    cache=not args.no_cache, estimator=args.estimator)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    by_kind = table.groupby("projection", sort=False)["alpha"].median().round(2)
    print(f"wrote {len(table)} rows to {args.out} (xmin={args.xmin}, estimator={args.estimator}); "
          "median alpha by projection: "
          + ", ".join(f"{k} {v}" for k, v in by_kind.items()))
    if args.robust:
        print(f"fragile alphas: {int(table['fragile'].sum())} of {len(table)}")
    return 0
