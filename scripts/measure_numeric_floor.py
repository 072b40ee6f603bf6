"""The numeric floor across CPUs: how far each perplexity row moves between two hosts, same code and inputs.

Float32 results differ in their low bits between CPU kernel capabilities (AVX2, AVX-512, ...), and TopK at high
sparsity amplifies them: a near-tie decides which inputs are kept, and at 80% that compounds over 30 layers. A
table regenerated on one host is therefore compared, row by row, with the same table as committed at an earlier
revision from another host (read from git history). Threads (1 vs 2) change nothing here, and a float64 loss moves
perplexity by about 1e-5 relative; the host is what matters.

Writes ``data/results/numeric_floor.csv`` (+ sidecar): one row per (table, strategy, sparsity) present in both
versions, with both perplexities, the relative drift and both sidecars' devices. ``report.noise_floor`` reads it:
a change against uniform counts as better or worse only when its interval clears the floor at its target.
Usage:
    python scripts/measure_numeric_floor.py --old-rev REV [--table FILE ...]
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from acttail_lab.core.results_io import write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "data" / "results"
TABLES = ("upper_reference_smollm2-135m.csv", "perplexity_smollm2-135m.csv")
OUT = RESULTS / "numeric_floor.csv"


def at_revision(rev: str, name: str) -> tuple[pd.DataFrame, dict] | None:
    """A committed table and its sidecar as they were at git revision ``rev`` (None when absent there)."""
    def show(path):
        done = subprocess.run(["git", "show", f"{rev}:data/results/{path}"], cwd=ROOT, capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else None

    table, sidecar = show(name), show(name + ".json")
    if table is None or sidecar is None:
        return None
    return pd.read_csv(io.StringIO(table)), json.loads(sidecar)


def drift_rows(name: str, old_rev: str) -> pd.DataFrame:
    """Rows of ``name`` in both its current version and at ``old_rev``, matched on (strategy, sparsity)."""
    old = at_revision(old_rev, name)
    if old is None:
        return pd.DataFrame()
    old_table, old_sidecar = old
    new_table = pd.read_csv(RESULTS / name)
    new_sidecar = json.loads((RESULTS / (name + ".json")).read_text())
    keys = ["strategy", "sparsity"]
    both = new_table[keys + ["model", "perplexity", "tokens"]].merge(
        old_table[keys + ["perplexity", "tokens"]], on=keys, suffixes=("", "_old"))
    both = both[both["tokens"] == both["tokens_old"]]  # the same evaluation tokens only
    return both.assign(table=name, drift=both["perplexity"] / both["perplexity_old"] - 1.0,
                       device=new_sidecar.get("device"), device_old=old_sidecar.get("device"),
                       git_sha=new_sidecar.get("git_sha"), git_sha_old=old_sidecar.get("git_sha"),
                       cache_state=(new_sidecar.get("cache") or {}).get("state"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-rev", required=True, help="git revision holding the tables from the other host")
    parser.add_argument("--table", nargs="+", default=list(TABLES))
    args = parser.parse_args(argv)
    parts = [drift_rows(name, args.old_rev) for name in args.table]
    rows = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    if rows.empty:
        print(f"No table is in both the tree and {args.old_rev}. Fix: name tables that exist in both.", file=sys.stderr)
        return 2
    if (rows["cache_state"] != "empty").any():
        print("Warning: some current tables were not made from an empty cache (their sidecar's cache.state).",
              file=sys.stderr)
    columns = ["table", "model", "strategy", "sparsity", "perplexity", "perplexity_old", "drift", "tokens", "device",
               "device_old", "git_sha", "git_sha_old", "cache_state"]
    write_results(rows[columns], OUT, seed=None, device="cpu", old_rev=args.old_rev, tables=list(args.table),
                  command="python scripts/measure_numeric_floor.py " + " ".join(argv or sys.argv[1:]))
    summary = rows.assign(abs_drift=rows["drift"].abs()).groupby("sparsity")["abs_drift"].agg(
        ["count", "median", "max"])
    print(summary.to_string(float_format=lambda v: f"{v:.4%}"))
    print(f"wrote {OUT} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
