"""The ``wikitext2`` corpus for online users: WikiText-2 (raw) through ``datasets``, as the papers use it.

Evaluation text = the ``test`` split of ``Salesforce/wikitext`` (``wikitext-2-raw-v1``), its lines joined with
``"\\n\\n"`` (the usual protocol behind the papers' headline perplexities); calibration = the ``train`` split,
joined the same way. The first download is cached as text (``cache_dir("corpus", "wikitext2")``), so later runs
need no network. Without the Hub (offline variables set, or huggingface.co unreachable) and without that
cache, :func:`check_wikitext` raises a CorpusError naming the fix before any model loads. Licence of the
data: CC BY-SA 3.0 (Merity et al., 2016). Needs ``datasets`` (installed with ``acttail-lab[zeroshot]``).
"""
from __future__ import annotations

from pathlib import Path

from .cache import atomic_write_text, cache_dir
from .errors import CorpusError
from .hub import hub_reachable, offline_variable_set

WIKITEXT2 = "wikitext2"
DATASET = ("Salesforce/wikitext", "wikitext-2-raw-v1")
SPLIT_OF = {"calibration": "train", "evaluation": "test"}
"""Our split names -> WikiText-2's."""


def _cached(split: str) -> Path:
    return cache_dir("corpus", WIKITEXT2) / f"{SPLIT_OF[split]}.txt"


def check_wikitext() -> str:
    """``"wikitext2"`` when its text is cached or can be downloaded now; else CorpusError naming the fix."""
    if all(_cached(s).is_file() for s in SPLIT_OF):
        return WIKITEXT2
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise CorpusError("corpus='wikitext2' needs the `datasets` package. Fix: pip install "
                          "\"acttail-lab[zeroshot]\" (or pip install datasets), with the Hugging Face Hub "
                          "reachable.") from None
    if not hub_reachable():
        why = f"{offline_variable_set()} is set" if offline_variable_set() else "huggingface.co does not answer"
        raise CorpusError(f"corpus='wikitext2' comes from the Hugging Face Hub ({DATASET[0]}), which is not "
                          f"reachable here ({why}), and it is not cached yet. Fix: run once where the Hub is "
                          "reachable (the text is then cached), or use corpus='austen', 'encyclopedic' or a "
                          "local text file.")
    return WIKITEXT2


def wikitext_text(split: str = "evaluation") -> str:
    """The WikiText-2 raw text of ``split`` (``calibration`` = train, ``evaluation`` = test), joined with
    ``"\\n\\n"``; downloaded once through ``datasets`` and cached."""
    if split == "all":
        return "\n\n".join(wikitext_text(s) for s in ("calibration", "evaluation"))
    path = _cached(split)
    if not path.is_file():
        check_wikitext()
        from datasets import load_dataset

        try:
            rows = load_dataset(*DATASET, split=SPLIT_OF[split])
        except Exception as exc:  # noqa: BLE001 -- network, hub or cache failures all mean: not available
            raise CorpusError(f"Could not load {DATASET[0]} ({DATASET[1]}, {SPLIT_OF[split]}): "
                              f"{type(exc).__name__}: {str(exc)[:200]}. Fix: check the connection to the "
                              "Hugging Face Hub, or use another corpus.") from exc
        atomic_write_text(path, "\n\n".join(rows["text"]))
    return path.read_text(encoding="utf-8")
