"""Options and checks shared by the commands that run a model over strategies x sparsities
(``evaluate`` and ``zeroshot``): parsing of number lists, the run options, the checks made before a
model loads, and the command line written into the provenance sidecar. Not a command itself."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

DTYPES = ("float32", "float16", "bfloat16")


def floats(text: str) -> list[float]:
    """``"0.5,0.7"`` -> ``[0.5, 0.7]``; an argparse error naming the expected form otherwise."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers (e.g. 0.5,0.6,0.7).")


def add_run_options(parser, batch_size: int, batch_help: str) -> None:
    """The options every model run takes: xmin rule, calibration tokens, device / dtype / device map,
    batch size (``batch_size`` default, ``batch_help`` text), seed, dense row, cache, quiet, output CSV."""
    parser.add_argument("--xmin", default="peak", help="xmin rule for the alphas of strategies that name none "
                        "(default peak, AlphaPruning's rule; ks or median name the rule in the label)")
    parser.add_argument("--calibration-tokens", type=int, default=None,
                        help="calibration-split tokens for rotated / threshold / cats strategies (default 8192; "
                             "for rotation at least the widest projection input, e.g. 11264 for LLaMA-2-7B)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--device-map", default=None, help="e.g. auto: spread a large model over GPUs")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=batch_help)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-dense", action="store_true", help="skip the dense row")
    parser.add_argument("--no-cache", action="store_true", help="recompute every row (and do not write the cache)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-row log lines")
    parser.add_argument("--out", required=True, help="output CSV path (a <out>.json sidecar is written next to it)")


def run_specs(args, example_csv: str) -> list:
    """The parsed ``--strategies`` of a run (empty for ``none``), after the checks that need no model: ``--out``
    is not a folder (``example_csv`` names a file in the fix) and there is something to evaluate."""
    from ..allocation import parse_strategies
    from ..core.errors import ActTailError

    if Path(args.out).is_dir():
        raise ActTailError(f"--out {args.out} is a folder. Fix: pass a CSV file path, e.g. {args.out}/{example_csv}.")
    specs = [] if args.strategies.strip().lower() in ("", "none") else parse_strategies(args.strategies)
    if not specs and args.no_dense:
        raise ActTailError("Nothing to evaluate: --strategies none with --no-dense. Fix: drop one of them.")
    return specs


def run_settings(args):
    """The parsed run options as one ``measure.settings.RunSettings`` (model, xmin, calibration tokens, device,
    dtype, device map, batch size, seed, cache, dense row, progress; corpus, split, tokens, window and protocol
    when the command has them, else the settings' defaults). A bad value raises the project's error before any
    model loads."""
    from ..measure.settings import RunSettings

    shared = dict(model=args.model, xmin=args.xmin, calibration_tokens=args.calibration_tokens, device=args.device,
                  dtype=args.dtype, device_map=args.device_map, batch_size=args.batch_size, seed=args.seed,
                  cache=not args.no_cache, include_dense=not args.no_dense, progress=not args.quiet,
                  log_rows=not args.quiet)
    own = {name: getattr(args, name) for name in ("corpus", "split", "tokens", "window", "protocol")
           if hasattr(args, name)}
    return RunSettings(**shared, **own)


def ran_on(settings) -> str:
    """The device a run used, for its sidecar: cuda under a device map, else ``core.models.resolve_device``."""
    from ..core.models import resolve_device

    return "cuda" if settings.device_map else str(resolve_device(settings.device))


def with_dtype(table, lm):
    """``table`` with a ``dtype`` column: the dtype the model ran in (its first parameter's, e.g. ``float32``), so
    every committed row says it (the grid's rows carry it from ``measure.grid``)."""
    from ..measure.settings import dtype_name

    return table.assign(dtype=dtype_name(next(lm.model.parameters()).dtype))


def command_line(args) -> str:
    """The parsed arguments written back as one shell command (for the provenance sidecar)."""
    words = ["acttail-lab", args.command]
    for name, value in vars(args).items():
        if name.startswith("_") or name == "command" or value in (None, False):
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            words.append(flag)
        else:
            words += [flag, ",".join(f"{v:g}" for v in value) if isinstance(value, list) else str(value)]
    return shlex.join(words)
