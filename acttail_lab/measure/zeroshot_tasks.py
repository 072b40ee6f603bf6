"""Which data lm-eval's standard zero-shot tasks read: the Hugging Face Hub, or our local copies.

``data="hub"`` uses lm-eval's own task definitions and data (the Hub must be reachable).
``data="local"`` writes, per task, a YAML that ``include:``-s lm-eval's own task YAML (prompt, choices,
metrics, processing functions unchanged) and overrides only where the data come from
(``dataset_path``, ``dataset_name``, ``dataset_kwargs``; ``training_split: null`` since no train split is
shipped, so runs are zero-shot only) and, where the local copy is another split than
the standard task scores (ARC and OpenBookQA: validation instead of test), which split is read.
``data="auto"`` picks ``hub`` when the Hub answers and no offline variable is set, else ``local``.

Outputs: :func:`task_setup` -> :class:`TaskSetup` (a ``lm_eval`` TaskManager, the canonical task
names, and per task the identity of its data for cache keys). Needs ``pip install "acttail-lab[zeroshot]"``.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.cache import atomic_write_text, cache_dir, stable_hash
from ..core.errors import TaskDataError, ZeroShotError
from ..core.hub import hub_reachable
from ..core.task_data import TASK_ALIASES, TASK_DATA, canonical_task, task_file

DATA_MODES = ("auto", "local", "hub")

STANDARD_YAML = {
    "piqa": "piqa/piqa.yaml", "arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml", "winogrande": "winogrande/default.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml", "lambada_openai": "lambada/lambada_openai.yaml",
}
"""lm-eval's own YAML of each task with a local copy, relative to ``lm_eval/tasks``."""

def lm_eval_version() -> str:
    """The installed lm-eval version; ZeroShotError naming the install command when it is missing."""
    try:
        from importlib.metadata import version

        return version("lm_eval")
    except Exception as exc:  # noqa: BLE001 -- PackageNotFoundError or a broken install
        raise ZeroShotError("lm-evaluation-harness is not installed. Fix: pip install \"acttail-lab[zeroshot]\" "
                            "(or pip install \"lm-eval==0.4.13\").") from exc


def check_limit(limit) -> int:
    """``limit`` (examples per task) as a positive int, else ZeroShotError naming the fix."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise ZeroShotError(f"limit={limit!r} must be a positive whole number of examples per task. "
                            "Fix: pass e.g. limit=100 (--limit 100); the first `limit` examples are scored.")
    return limit


def check_data_mode(data: str) -> str:
    if data not in DATA_MODES:
        raise ZeroShotError(f"data={data!r} is not one of {DATA_MODES}. Fix: use 'local' for the offline copies, "
                            "'hub' for lm-eval's own data, or 'auto'.")
    return data


def resolve_data_mode(data: str = "auto") -> str:
    """``"local"`` or ``"hub"`` for ``data`` (``auto``: the Hub when it is reachable)."""
    data = check_data_mode(data)
    if data == "auto":
        return "hub" if hub_reachable() else "local"
    return data


def check_tasks(tasks, data: str = "local") -> list[str]:
    """Canonical names of ``tasks`` (one name, a comma list or a sequence), checked without lm-eval's index
    for ``local``: each must have a local copy (TaskDataError listing those we have)."""
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t.strip()]
    names = list(dict.fromkeys(canonical_task(t) for t in (tasks or [])))
    if not names:
        raise TaskDataError(f"No task given. Fix: pass e.g. tasks=('piqa', 'arc_easy'); local tasks: "
                            f"{', '.join(TASK_DATA)}.")
    if data == "local":
        missing = [t for t in names if t not in TASK_DATA]
        if missing:
            raise TaskDataError(
                f"No local (offline) data for task(s) {', '.join(missing)}. Local tasks: {', '.join(TASK_DATA)} "
                f"(aliases: {', '.join(f'{a}={t}' for a, t in TASK_ALIASES.items())}). Fix: choose from those, "
                "or run with the Hugging Face Hub reachable (data='hub') to use lm-eval's own data.")
    return names


def _lm_eval_tasks_dir() -> Path:
    lm_eval_version()
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def local_task_yaml(task: str, folder: Path) -> Path:
    """Write ``folder/<task>.yaml``: lm-eval's own task YAML included, data source overridden to the local
    copy (:func:`acttail_lab.core.task_data.task_file`). Returns its path."""
    import yaml

    local = task_file(task)
    spec = TASK_DATA[task]
    standard = _lm_eval_tasks_dir() / STANDARD_YAML[task]
    if not standard.exists():
        raise ZeroShotError(f"lm-eval has no {standard}. Fix: install the pinned lm-eval==0.4.13.")
    config = {"include": str(standard), "task": task, "dataset_path": local.fmt, "dataset_name": None,
              "dataset_kwargs": {"data_files": {local.split: str(local.path)}},
              "training_split": None}  # the local copy has no train split: zero-shot only (no few-shot source)
    if spec.standard_split != spec.split:  # the standard task scores a split we do not have: read ours
        config.update({f"{spec.standard_split}_split": None, f"{spec.split}_split": spec.split})
    path = folder / f"{task}.yaml"
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class TaskSetup:
    """What a zero-shot run hands lm-eval: ``manager`` (a TaskManager), ``tasks`` (canonical names),
    ``mode`` (``local``/``hub``), and per task ``data_keys`` (file SHA-256 or hub id) and ``splits``."""

    manager: object
    tasks: list
    mode: str
    data_keys: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)


@contextlib.contextmanager
def offline_env(mode: str):
    """While a ``local`` run evaluates, set the Hugging Face offline variables (so ``datasets`` never tries the
    network); restore them afterwards. Does nothing for ``hub``."""
    names = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE") if mode == "local" else ()
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def task_setup(tasks, data: str = "auto") -> TaskSetup:
    """Check ``tasks`` and build the TaskManager that runs them from the chosen data (module doc).

    Unknown tasks (hub mode) raise TaskDataError naming close lm-eval task names.
    """
    mode = resolve_data_mode(data)
    names = check_tasks(tasks, mode)
    version = lm_eval_version()
    if mode == "local":
        from lm_eval.tasks import TaskManager

        folder = cache_dir("tasks", "lm_eval_yaml", stable_hash([version, sorted(names)], 12))
        for name in names:
            local_task_yaml(name, folder)
        keys = {n: f"local:{task_file(n).sha256}" for n in names}
        splits = {n: TASK_DATA[n].split for n in names}
        return TaskSetup(TaskManager(include_path=str(folder), include_defaults=False), names, mode, keys, splits)
    from lm_eval.tasks import TaskManager

    manager = TaskManager()
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        import difflib

        hints = {n: difflib.get_close_matches(n, manager.all_subtasks, n=3) for n in unknown}
        raise TaskDataError(f"lm-eval has no task(s) {', '.join(unknown)} (close names: {hints}). Fix: use an "
                            "lm-eval task name (lm-eval ls tasks), e.g. piqa, arc_easy, hellaswag, lambada_openai.")
    keys = {n: f"hub:{n}:lm_eval=={version}" for n in names}
    splits = {n: TASK_DATA[n].standard_split if n in TASK_DATA else "standard" for n in names}
    return TaskSetup(manager, names, mode, keys, splits)
