"""Run the workbench's stages on one model, each as its own process, and record what each one cost.

Writes ``data/results/<model>_stage_costs.csv`` (+ ``.json`` sidecar), one row per stage:

* ``stage``, ``command``: what ran (every stage reads and fills the content-keyed caches, so a stage run
  after another finds that one's results: ``topk`` does not recompute the spectra that ``spectra`` made);
* ``wall_s``, ``cpu_s``: seconds of wall clock and of CPU (user + system) of the stage's process;
* ``peak_rss_gb``: that process's largest resident set (GB, 1e9 bytes): ``VmHWM`` of ``/proc/<pid>/status``
  read every 0.5 s (``os.wait4``'s ``ru_maxrss`` where there is no ``/proc``);
* ``load_before``, ``load_after``: the 1-minute load average around it. Above ~1 another job shared the
  cores, and ``wall_s`` is inflated by up to that factor; ``cpu_s`` is not;
* ``returncode``, ``finished`` (UTC), ``dtype``, ``threads``;
* ``attempts``: processes the stage took. A stage interrupted (killed at the end of a session, or failed) and
  run again resumes from the row caches; its row then sums the wall and CPU seconds of every attempt and keeps
  the largest peak RSS, so a stage that took three sessions says what it cost in all.

A stage recorded with return code 0 is skipped on the next run (resumable), unless ``--redo`` names it (then
its cost is measured afresh, one attempt). A stage that fails stops the run and is recorded with its return code.

Usage (repository root)::

    python scripts/stage_costs.py --model qwen2.5-coder-1.5b [--stages load,spectra,cost-table,topk]
        [--redo topk] [--out FILE]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pandas as pd  # noqa: E402

from acttail_lab.core.cache import atomic_path  # noqa: E402
from acttail_lab.core.provenance import write_sidecar  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("stage", "command", "wall_s", "cpu_s", "peak_rss_gb", "load_before", "load_after", "returncode",
           "finished", "dtype", "threads", "attempts")
_LOAD = "from acttail_lab.core.models import load_model; load_model({model!r})"
_SPECTRA = ("from acttail_lab.core.models import load_model; from acttail_lab.spectral import spectra; "
            "lm = load_model({model!r}); [spectra.analyze(lm, xmin=r, progress=True) for r in ('ks', 'peak', 'median')]")
_CLI = "import sys; from acttail_lab.cli import main; sys.exit(main())"


def stages(model: str) -> dict[str, list[str]]:
    """Stage name -> argv (run with this interpreter from the repository root), in the order they run."""
    py = sys.executable
    grid = [py, "scripts/reproduce_perplexity.py", "--model", model]
    encyclopedic = [py, "scripts/reproduce_encyclopedic.py", "--model", model]

    def zeroshot(strategies: str, out: str, sparsities: str = "0.5") -> list[str]:
        return [py, "-c", _CLI, "zeroshot", "--model", model, "--strategies", strategies, "--sparsities", sparsities,
                "--tasks", "piqa,arc_easy", "--limit", "200", "--data", "local", "--xmin", "peak", "--device", "cpu",
                "--dtype", "float32", "--out", out]

    return {
        "load": [py, "-c", _LOAD.format(model=model)],  # first time: fetch + dequantise into the prepared folder
        "spectra": [py, "-c", _SPECTRA.format(model=model)],  # ESDs of every projection, three xmin rules
        "cost-table": [py, "scripts/reproduce_sensitivity.py", "--model", model, "--skip-loss"],  # TopK error
        "topk": grid + ["--tiers", "1"],  # dense + TopK rows (uniform, acttail, acttail-ks, acttail-block)
        # each later tier alone, added to the table the earlier ones wrote (so a stage costs only its own rows)
        "wina": grid + ["--tier", "2"],
        "greedy-fine": grid + ["--tier", "3"],  # TEAL's fine greedy path on calibration text, then its rows
        "rotation": grid + ["--tier", "4"],  # LaRoSA rotation set-up (calibration moments, eigh), then its rows
        # the encyclopedic grid and zero-shot in two pieces each: the rows that need no greedy path first (they can
        # run beside the greedy-fine stage), then teal-greedy-fine added to the table they wrote (--add)
        "encyclopedic-topk": encyclopedic + ["--strategies", "uniform,acttail,acttail-block"],
        "encyclopedic": encyclopedic + ["--strategies", "teal-greedy-fine", "--add"],  # + its own greedy path
        "zeroshot-topk": zeroshot("uniform,acttail", f"data/results/zeroshot_{model}.csv"),
        "zeroshot": zeroshot("teal-greedy-fine", f"data/results/zeroshot_{model}.csv") + ["--add", "--no-dense"],
        # the same three allocations at 70% (the "if CPU time allows"), added to the same table
        "zeroshot-70": zeroshot("uniform,acttail,teal-greedy-fine", f"data/results/zeroshot_{model}.csv",
                                sparsities="0.7") + ["--add", "--no-dense"],
    }  # zeroshot after greedy-fine: it reads that path


def _high_water_kb(pid: int) -> int:
    """The process's peak resident set so far (kB, ``VmHWM`` of ``/proc/<pid>/status``); 0 where unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run_stage(name: str, argv: list[str]) -> dict:
    """Run one stage as a child process; return its cost row."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    print(f"[stage_costs] {name}: {' '.join(argv)[:160]}", flush=True)
    child = subprocess.Popen(argv, cwd=REPO)
    peak_kb, polls = 0, 0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid == child.pid:
            break
        peak_kb = max(peak_kb, _high_water_kb(child.pid))
        polls += 1
        time.sleep(min(0.5, 0.02 * polls))
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    # /proc's VmHWM counts the stage's own program only; ru_maxrss also counts this parent's image, which
    # the child carried until it exec'd (the fallback where /proc is absent)
    if not Path("/proc/self/status").exists():
        peak_kb = usage.ru_maxrss
    row = dict(stage=name, command="python " + " ".join(argv[1:]),
               wall_s=round(wall, 1), cpu_s=round(usage.ru_utime + usage.ru_stime, 1),
               peak_rss_gb=round(peak_kb * 1024 / 1e9, 2), load_before=round(load_before, 2),
               load_after=round(os.getloadavg()[0], 2), returncode=child.returncode,
               finished=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), dtype="float32",
               threads=int(os.environ["OMP_NUM_THREADS"]))
    print(f"[stage_costs] {name}: rc {row['returncode']}, {row['wall_s']:.0f} s wall, {row['cpu_s']:.0f} s CPU, "
          f"peak RSS {row['peak_rss_gb']:.2f} GB, load {row['load_before']:.2f} -> {row['load_after']:.2f}",
          flush=True)
    return row


def with_earlier_attempts(row: dict, earlier: pd.DataFrame) -> dict:
    """``row`` (a finished attempt) with the cost of an earlier, unfinished attempt of the same stage added:
    wall and CPU seconds summed, the larger peak RSS, ``attempts`` counted. ``earlier`` holds the stage's
    recorded row (or none); a recorded success is not an earlier attempt (``--redo`` measures afresh)."""
    row = dict(row, attempts=1)
    if len(earlier) != 1 or int(earlier["returncode"].iloc[0]) == 0:
        return row
    before = earlier.iloc[0]
    attempts = before.get("attempts")
    row["attempts"] = 1 + (1 if pd.isna(attempts) else int(attempts))
    row["wall_s"] = round(row["wall_s"] + float(before["wall_s"]), 1)
    row["cpu_s"] = round(row["cpu_s"] + float(before["cpu_s"]), 1)
    row["peak_rss_gb"] = max(row["peak_rss_gb"], float(before["peak_rss_gb"]))
    return row


def write_table(table: pd.DataFrame, out: Path, model: str) -> None:
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    write_sidecar(out, model=model, device="cpu", rows=len(table),
                  command="python scripts/stage_costs.py --model " + model,
                  description="wall and CPU seconds and peak resident memory of each stage, each its own process")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="built-in model name")
    parser.add_argument("--stages", default=None, help="comma-separated subset, in the default order")
    parser.add_argument("--redo", default="", help="comma-separated stages to run again though recorded")
    parser.add_argument("--out", type=Path, default=None, help="default: data/results/<model>_stage_costs.csv")
    args = parser.parse_args(argv)
    table_of = stages(args.model)
    chosen = list(table_of) if args.stages is None else args.stages.split(",")
    unknown = sorted(set(chosen) - set(table_of))
    if unknown:
        parser.error(f"unknown stages {unknown}; the stages are {list(table_of)}")
    out = args.out or REPO / "data" / "results" / f"{args.model}_stage_costs.csv"
    table = pd.read_csv(out) if out.exists() else pd.DataFrame(columns=list(COLUMNS))
    if "attempts" not in table:  # tables written before the column existed: one attempt each
        table["attempts"] = 1
    redo = set(filter(None, args.redo.split(",")))
    for name in chosen:
        done = table[(table["stage"] == name) & (table["returncode"] == 0)]
        if len(done) and name not in redo:
            print(f"[stage_costs] {name}: recorded, skipped (--redo {name} runs it again)", flush=True)
            continue
        row = with_earlier_attempts(run_stage(name, table_of[name]), table[table["stage"] == name])
        table = pd.concat([table[table["stage"] != name], pd.DataFrame([row])], ignore_index=True)
        order = {stage: i for i, stage in enumerate(table_of)}
        table = table.sort_values("stage", key=lambda s: s.map(order)).reset_index(drop=True)
        write_table(table[list(COLUMNS)], out, args.model)
        if row["returncode"] != 0:
            return int(row["returncode"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
