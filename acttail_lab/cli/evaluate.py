"""``acttail-lab evaluate``: perplexity over strategies x sparsities (plus dense), to a CSV with provenance."""
from __future__ import annotations

import argparse
import shlex

from ..core.corpus import DEFAULT_CORPUS
from ..core.paths import DEFAULT_MODEL

HELP = ("Perplexity of TopK-sparsified models for each strategy and target sparsity (plus a dense row); "
        "writes a CSV and a <csv>.json provenance sidecar. Rows are cached, so a re-run resumes.")

_DTYPES = ("float32", "float16", "bfloat16")


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers (e.g. 0.5,0.6,0.7).")


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="built-in name, Hugging Face id, folder or .gguf")
    parser.add_argument("--strategies", default="uniform,acttail",
                        help="comma-separated presets or NAME[key=value;...] (e.g. uniform,acttail,acttail[eps=0.2], "
                             "rotated-acttail, teal-threshold, cats, ffn-threshold, uniform[method=threshold;"
                             "kinds=gate+up+down]); 'none' for the dense row only")
    parser.add_argument("--sparsities", type=_floats, default=[0.5, 0.6, 0.7, 0.8],
                        help="comma-separated target sparsities in [0, 1) (default 0.5,0.6,0.7,0.8)")
    parser.add_argument("--tokens", type=int, default=16384, help="evaluation tokens, whole windows (default 16384)")
    parser.add_argument("--window", type=int, default=512, help="tokens per window (default 512)")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS,
                        help="'austen', 'encyclopedic', 'wikitext2' (Hugging Face Hub, online only) or a text file "
                             "(default austen)")
    parser.add_argument("--split", default="evaluation", choices=("calibration", "evaluation", "all"))
    parser.add_argument("--protocol", default="all", choices=("all", "last_half"),
                        help="all: sparsify and score every position; last_half: TEAL prefill rule")
    parser.add_argument("--xmin", default="ks", help="xmin rule for the alphas (default ks)")
    parser.add_argument("--calibration-tokens", type=int, default=None,
                        help="calibration-split tokens for rotated / threshold / cats strategies (default 8192; "
                             "for rotation at least the widest projection input, e.g. 11264 for LLaMA-2-7B)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=_DTYPES)
    parser.add_argument("--device-map", default=None, help="e.g. auto: spread a large model over GPUs")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-dense", action="store_true", help="skip the dense row")
    parser.add_argument("--no-cache", action="store_true", help="recompute every row (and do not write the cache)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-row log lines")
    parser.add_argument("--out", required=True, help="output CSV path (a <out>.json sidecar is written next to it)")


def command_line(args) -> str:
    """The parsed arguments written back as one shell command (for the provenance sidecar)."""
    words = ["acttail-lab", "evaluate"]
    for name, value in vars(args).items():
        if name.startswith("_") or name == "command" or value in (None, False):
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            words.append(flag)
        else:
            words += [flag, ",".join(f"{v:g}" for v in value) if isinstance(value, list) else str(value)]
    return shlex.join(words)


def run(args) -> int:
    from pathlib import Path

    import torch

    from ..allocation import parse_strategies
    from ..core.errors import ActTailError
    from ..core.models import resolve_device
    from ..measure.grid import evaluate_grid, windows_path, write_grid

    if Path(args.out).is_dir():  # every check runs before the model loads (evaluate_grid checks the rest)
        raise ActTailError(f"--out {args.out} is a folder. Fix: pass a CSV file path, e.g. {args.out}/grid.csv.")
    specs = [] if args.strategies.strip().lower() in ("", "none") else parse_strategies(args.strategies)
    if not specs and args.no_dense:
        raise ActTailError("Nothing to evaluate: --strategies none with --no-dense. Fix: drop one of them.")
    dtype = getattr(torch, args.dtype)
    df = evaluate_grid(
        args.model, strategies=specs, sparsities=args.sparsities, tokens=args.tokens, window=args.window,
        corpus=args.corpus, split=args.split, xmin=args.xmin, protocol=args.protocol, device=args.device,
        dtype=dtype, seed=args.seed, cache=not args.no_cache, progress=not args.quiet,
        include_dense=not args.no_dense, batch_size=args.batch_size, device_map=args.device_map,
        calibration_tokens=args.calibration_tokens, log_rows=not args.quiet,
    )
    device = "cuda" if args.device_map else resolve_device(args.device)
    path = write_grid(
        df, args.out, seed=args.seed, device=device, command=command_line(args),
        model=args.model, strategies=args.strategies, sparsities=args.sparsities, tokens=args.tokens,
        window=args.window, corpus=args.corpus, split=args.split, protocol=args.protocol, xmin=args.xmin,
        dtype=args.dtype, device_map=args.device_map, calibration_tokens=args.calibration_tokens,
    )
    cols = ["strategy", "method", "sparsity", "perplexity", "realised_sparsity", "realised_std", "tokens", "wall_s",
            "cached"]
    print(df[cols].to_string(index=False))
    print(f"wrote {path} and {path}.json; per-window losses in {windows_path(path)}")
    return 0
