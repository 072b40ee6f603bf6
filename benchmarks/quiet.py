"""Quiet-machine guard shared by the 7B-shape CPU benchmarks (``bench_gemv_7b.py``, ``bench_decode_7b.py``).

Timings taken while other processes use the cores are wrong. :func:`check_quiet`
reads the 1-minute load average (``os.getloadavg``) before a run and refuses to
start above ``max_load`` unless ``force`` (then the sidecar says so, loudly);
:func:`load_record` is what the sidecar stores (load before and after, the
limit, whether it was respected, whether this is a smoke run). A smoke run
(tiny shapes, one round: it checks that the code runs, it is not a
measurement) never writes under ``data/results/`` (:func:`check_output`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

SMOKE_NOTE = "SMOKE RUN: tiny shapes / one round, to check that the code runs. These numbers are NOT measurements."


def check_quiet(max_load: float, force: bool, smoke: bool) -> dict:
    """Load average before the run; exits with status 3 when the 1-minute load exceeds ``max_load``.

    ``force`` (or ``smoke``) runs anyway and marks the record ``quiet: False``.
    Returns the ``before`` part of the sidecar's load record.
    """
    before = os.getloadavg()
    quiet = before[0] <= max_load
    record = dict(load_before=[round(v, 2) for v in before], max_load=max_load, quiet=quiet, smoke=smoke,
                  cores=os.cpu_count())
    if smoke:
        print(SMOKE_NOTE, flush=True)
    if not quiet:
        message = (f"1-minute load average {before[0]:.2f} > {max_load}: other processes are using the cores, "
                   "so timings would be wrong.")
        if not (force or smoke):
            print(f"refusing to start: {message} Wait for a quiet machine (or pass --force to record a run "
                  "flagged as not quiet).", file=sys.stderr)
            sys.exit(3)
        print(f"WARNING: {message} The sidecar records quiet=false; do not report these numbers.", flush=True)
    return record


def load_record(before: dict) -> dict:
    """``before`` plus the load average after the run, rounded, for the JSON sidecar."""
    return {**before, "load_after": [round(v, 2) for v in os.getloadavg()]}


def check_output(out: str | os.PathLike, smoke: bool) -> Path:
    """The output path; a smoke run aimed under ``data/results/`` exits with status 2 instead."""
    path = Path(out).resolve()
    if smoke and "data/results" in path.as_posix():
        print(f"refusing to write smoke numbers to {path}: smoke runs are not measurements. Pass --out /tmp/...",
              file=sys.stderr)
        sys.exit(2)
    return path


def add_quiet_options(parser, smoke_help: str, default_out) -> None:
    """The options every quiet-machine benchmark takes: ``--max-load``, ``--force``, ``--smoke``, ``--out``."""
    parser.add_argument("--max-load", type=float, default=0.5)
    parser.add_argument("--force", action="store_true", help="run above --max-load (flagged in the sidecar)")
    parser.add_argument("--smoke", action="store_true", help=smoke_help)
    parser.add_argument("--out", default=None, help=f"CSV path (default {default_out}; smoke runs must name /tmp/...)")
