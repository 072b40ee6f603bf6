"""``acttail-lab allocate``: alphas in, per-projection sparsity budgets (CSV) out."""
from __future__ import annotations

HELP = "Turn per-projection alphas into sparsity budgets whose parameter-weighted mean is the target."

# CLI flag -> allocate() option; flags left unset keep the strategy's / preset's values.
_OPTION_FLAGS = ("epsilon", "granularity", "direction", "mapping", "power", "s_max", "seed")


def add_arguments(parser) -> None:
    from ..allocation import STRATEGY_PRESETS
    from ..allocation.strategies import DIRECTIONS, GRANULARITIES, MAPPINGS

    parser.add_argument("--alphas", required=True,
                        help="a .csv from `acttail-lab spectra` (layer, projection, n_params, alpha) or a .npy "
                             "of 7 alphas per layer (e.g. data/reference/published_alphas/llama2-7b-hf.alpha_peak.npy)")
    parser.add_argument("--shapes", default=None,
                        help="for a .npy: a model key (llama2-7b, llama-13b, ...) or a projection-table CSV; "
                             "read from AlphaPruning file names when omitted")
    parser.add_argument("--strategy", default="acttail",
                        help="strategy (uniform, acttail, shuffled, kind), preset or NAME[key=value;...] "
                             "(default acttail). Presets: " + ", ".join(STRATEGY_PRESETS))
    parser.add_argument("--target", type=float, required=True, help="parameter-weighted mean sparsity, in [0, 1)")
    parser.add_argument("--epsilon", type=float, help="acttail spread: ratios lie in [1-eps, 1+eps] (default 0.3)")
    parser.add_argument("--granularity", choices=GRANULARITIES, help="per projection (default) or per block (layer)")
    parser.add_argument("--direction", choices=DIRECTIONS, help="alpha_up (default): higher alpha -> more sparsity")
    parser.add_argument("--mapping", choices=MAPPINGS, help="alpha -> score before min-max scaling (default linear)")
    parser.add_argument("--power", type=float, help="exponent for --mapping power (default 2)")
    parser.add_argument("--s-max", dest="s_max", type=float, help="cap on any one projection's sparsity (default 0.99)")
    parser.add_argument("--seed", type=int, help="permutation seed of the shuffled strategy (default 0)")
    parser.add_argument("--out", required=True, help="output CSV (written atomically)")


def run(args) -> int:
    from ..allocation import (
        allocate,
        load_alpha_table,
        save_allocation,
        summary,
        weighted_mean,
    )
    from ..sparsify.methods import resolve_spec

    options = {name: getattr(args, name) for name in _OPTION_FLAGS if getattr(args, name) is not None}
    spec = resolve_spec(args.strategy, options)  # the one typed spec: strategy, options, method, kinds
    table = load_alpha_table(args.alphas, args.shapes)
    allocation = allocate(table, spec, args.target)
    path = save_allocation(allocation, args.out)
    per_kind = summary(allocation, by="projection")
    columns = [c for c in ("projection", "sparsity", "sparsity_min", "sparsity_max", "alpha_mean") if c in per_kind]
    print(f"{allocation['label'][0]}: {len(allocation)} projections, "
          f"weighted mean sparsity {weighted_mean(allocation['sparsity'], allocation['n_params']):.6f} "
          f"(target {args.target}), max {allocation['sparsity'].max():.4f}")
    print(per_kind[columns].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"wrote {path}")
    return 0
