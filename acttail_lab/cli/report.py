"""``acttail-lab report``: the workbench on one model, written as a folder with a summary page."""
from __future__ import annotations

from ..core.paths import DEFAULT_MODEL

HELP = ("Run the workbench on one model and write the answer as a report folder: the measured tables (with "
        "sidecars), the executed notebooks and their pages, and a summary page with the verdict of every strategy x "
        "target against uniform, with intervals. Checks every input before a model loads, prints what it will run "
        "and a time estimate, and resumes from the caches when interrupted.")


def add_arguments(parser) -> None:
    from .report_plan import SIZES

    parser.add_argument("--model", default=DEFAULT_MODEL, help="built-in name, Hugging Face id, folder or .gguf")
    parser.add_argument("--corpus", default="austen", help="austen, encyclopedic, or a UTF-8 text file")
    parser.add_argument("--size", default="standard", choices=tuple(SIZES),
                        help="quick: minutes (CI); standard: the example report; full: the committed grids' sizes")
    parser.add_argument("--out", required=True, help="report folder (new, empty, or this model's earlier report)")
    parser.add_argument("--plan-only", action="store_true", help="print the plan and the estimate, run nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    from .report_plan import plan_report, plan_text

    plan = plan_report(args.model, args.corpus, args.size, args.out)  # every check, before any model loads
    print(plan_text(plan), flush=True)
    if args.plan_only:
        return 0
    from .report_run import run_report

    index = run_report(plan, progress=not args.quiet)
    print(f"wrote {index}")
    return 0
