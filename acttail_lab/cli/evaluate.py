"""``acttail-lab evaluate``: perplexity over strategies x sparsities (plus dense), to a CSV with provenance."""
from __future__ import annotations

from ..core.corpus import DEFAULT_CORPUS
from ..core.paths import DEFAULT_MODEL
from .options import add_run_options, command_line, floats, ran_on, run_settings, run_specs

HELP = ("Perplexity of TopK-sparsified models for each strategy and target sparsity (plus a dense row); "
        "writes a CSV and a <csv>.json provenance sidecar. Rows are cached, so a re-run resumes.")


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="built-in name, Hugging Face id, folder or .gguf")
    parser.add_argument("--strategies", default="uniform,acttail",
                        help="comma-separated presets or NAME[key=value;...] (e.g. uniform,acttail,acttail[eps=0.2], "
                             "rotated-acttail, teal-threshold, cats, ffn-threshold, uniform[method=threshold;"
                             "kinds=gate+up+down]); 'none' for the dense row only")
    parser.add_argument("--sparsities", type=floats, default=[0.5, 0.6, 0.7, 0.8],
                        help="comma-separated target sparsities in [0, 1) (default 0.5,0.6,0.7,0.8)")
    parser.add_argument("--tokens", type=int, default=16384, help="evaluation tokens, whole windows (default 16384)")
    parser.add_argument("--window", type=int, default=512, help="tokens per window (default 512)")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS,
                        help="'austen', 'encyclopedic', 'wikitext2' (Hugging Face Hub, online only) or a text file "
                             "(default austen)")
    parser.add_argument("--split", default="evaluation", choices=("calibration", "evaluation", "all"))
    parser.add_argument("--protocol", default="all", choices=("all", "last_half"),
                        help="all: sparsify and score every position; last_half: TEAL prefill rule")
    add_run_options(parser, batch_size=4, batch_help="windows per forward pass (default 4)")


def run(args) -> int:
    from ..measure.grid import evaluate_grid
    from ..measure.grid_tables import windows_path, write_grid

    specs = run_specs(args, "grid.csv")  # every check runs before the model loads (evaluate_grid checks the rest)
    settings = run_settings(args)
    df = evaluate_grid(strategies=specs, sparsities=args.sparsities, settings=settings)
    path = write_grid(df, args.out, settings=settings, device=ran_on(settings), command=command_line(args),
                      strategies=args.strategies, sparsities=args.sparsities)
    cols = ["strategy", "method", "sparsity", "perplexity", "realised_sparsity", "realised_std", "tokens", "wall_s",
            "cached"]
    print(df[cols].to_string(index=False))
    print(f"wrote {path} and {path}.json; per-window losses in {windows_path(path)}")
    return 0
