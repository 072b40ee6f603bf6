"""Re-run a stratified sample of committed perplexity rows from an EMPTY cache and print how far each moved.

``make verify`` runs this. For each committed grid (default: the SmolLM2 and Gemma 3 270M perplexity grids) it takes
one row per strategy family at that family's highest target (dense, uniform, acttail, acttail-ks, acttail-block,
teal-greedy-fine, rotated-uniform; any of them the table lacks is skipped), re-computes them with the table's own
settings (model, corpus, split, tokens, window, protocol, xmin rule: read from the CSV and its sidecar) in a fresh
cache folder (only the downloaded inputs, checked by SHA-256, and the corpus text are linked in), and prints
committed, now and the relative drift. It exits 1 when any drift exceeds ``--tolerance`` (0.5% by default).
A zero-shot table (``zeroshot_<model>.csv``) is sampled the same way on one task (``--task``, PIQA by default):
dense and each strategy at its highest target, re-run with the table's own limit, data and batch size; its drift
is the change of accuracy, and it fails when that exceeds the committed row's standard error.
It also prints the CPU kernels each side ran on: committed tables are reproducible on the kernel capability
that made them (their sidecar's ``device``); another capability moves TopK rows at 80% by percents.

Cost on one CPU thread: about 12 minutes for SmolLM2 (7 rows of 16,352 tokens plus its greedy path and
rotation statistics), about 30 for Gemma 3 270M, about 20 for the SmolLM2 zero-shot sample. Usage:
    python scripts/verify_committed.py [--table FILE ...] [--labels L ...] [--tolerance 0.005] [--task piqa]
        [--out CSV]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

FAMILIES = ("dense", "uniform", "acttail", "acttail-ks", "acttail-block", "teal-greedy-fine", "rotated-uniform")
"""One label per strategy family: no split, alpha-guided (peak and KS rules), block granularity, greedy, rotation."""
TABLES = ("perplexity_smollm2-135m.csv", "perplexity_gemma3-270m.csv", "zeroshot_smollm2-135m.csv")
INPUTS = ("downloads", "corpus", "tasks")
"""Cache folders that hold inputs (checked downloads, extracted text), not results: linked into the empty cache."""


def sample_rows(table: pd.DataFrame, labels=FAMILIES) -> pd.DataFrame:
    """One row per label in ``labels`` that ``table`` has: the one at its highest target sparsity."""
    rows = [table[table["strategy"] == label].sort_values("sparsity").iloc[-1]
            for label in labels if (table["strategy"] == label).any()]
    return pd.DataFrame(rows).reset_index(drop=True)


def empty_cache(root: Path) -> Path:
    """A fresh cache folder with only the input folders of the user's cache linked in; sets ``ACTTAIL_CACHE``."""
    from acttail_lab.core.cache import cache_dir

    user = cache_dir()
    folder = Path(tempfile.mkdtemp(prefix="acttail-verify-", dir=root))
    for name in INPUTS:
        if (user / name).exists():
            (folder / name).symlink_to(user / name)
    os.environ["ACTTAIL_CACHE"] = str(folder)
    return folder


def verify_table(path: Path, labels, progress: bool = True) -> pd.DataFrame:
    """Re-run the sample of one committed grid; one row per sampled run with committed, now and drift."""
    from acttail_lab.core.models import load_model
    from acttail_lab.measure.grid import evaluate_grid

    table = pd.read_csv(path)
    sidecar = json.loads(Path(str(path) + ".json").read_text())
    settings = sidecar["settings"]
    from acttail_lab.core.provenance import describe_device

    print(f"{path.name}: committed on {sidecar.get('device')}; now on {describe_device('cpu')} (float32 results differ "
          "in their low bits between CPU kernel capabilities, e.g. AVX2 and AVX-512, and TopK amplifies them)",
          flush=True)
    sample = sample_rows(table, labels)
    lm = load_model(settings["model"])
    out = []
    for _, row in sample.iterrows():
        label = row["strategy"]
        rule = row["xmin_rule"] if isinstance(row["xmin_rule"], str) and row["xmin_rule"] else "peak"
        runs = evaluate_grid(lm, strategies=() if label == "dense" else (label,),
                             sparsities=() if label == "dense" else (float(row["sparsity"]),),
                             tokens=int(settings["tokens"]), window=int(settings["window"]),
                             corpus=settings["corpus"], split=settings["split"], protocol=settings["protocol"],
                             xmin=rule, seed=0, include_dense=label == "dense", progress=progress)
        now = runs[runs["strategy"] == label].iloc[0]
        out.append({"table": path.name, "strategy": label, "sparsity": float(row["sparsity"]),
                    "committed": float(row["perplexity"]), "now": float(now["perplexity"]),
                    "drift": float(now["perplexity"]) / float(row["perplexity"]) - 1.0,
                    "tokens": int(now["tokens"]), "committed_tokens": int(row["tokens"])})
        print(f"{path.name:42s} {label:18s} {row['sparsity']:.2f}  committed {row['perplexity']:12.4f}  "
              f"now {now['perplexity']:12.4f}  drift {out[-1]['drift']:+.3%}", flush=True)
    return pd.DataFrame(out)


def zeroshot_sample(table: pd.DataFrame, task: str, metric: str = "acc") -> pd.DataFrame:
    """Dense and each strategy at its highest target, on ``task`` and ``metric``, from a zero-shot table."""
    rows = table[(table["task"] == task) & (table["metric"] == metric)]
    if rows.empty:
        raise SystemExit(f"The zero-shot table has no {task!r} {metric!r} rows (it has {sorted(set(table['task']))}). "
                         f"Fix: pass --task with one of them.")
    return sample_rows(rows, labels=list(dict.fromkeys(rows["strategy"])))


def verify_zeroshot(path: Path, task: str, progress: bool = True) -> pd.DataFrame:
    """Re-run the sample of one committed zero-shot table; one row per sampled run (drift = change of accuracy)."""
    from acttail_lab.core.models import load_model
    from acttail_lab.measure.zeroshot import evaluate_zeroshot

    table = pd.read_csv(path)
    settings = json.loads(Path(str(path) + ".json").read_text())["settings"]
    task = {"lambada": "lambada_openai"}.get(task, task)
    sample = zeroshot_sample(table, task)
    lm = load_model(settings["model"])
    out = []
    for _, row in sample.iterrows():
        label, dense = row["strategy"], row["strategy"] == "dense"
        runs = evaluate_zeroshot(lm, strategies=() if dense else (label,), sparsities=() if dense else
                                 (float(row["sparsity"]),), tasks=task, limit=int(settings["limit"]), seed=0,
                                 include_dense=dense, data=settings["data"][0], batch_size=int(settings["batch_size"]),
                                 xmin=settings.get("xmin", "peak"), progress=progress)
        now = runs[(runs["strategy"] == label) & (runs["metric"] == row["metric"])].iloc[0]
        drift = float(now["value"]) - float(row["value"])
        out.append({"table": path.name, "strategy": label, "sparsity": float(row["sparsity"]), "task": task,
                    "committed": float(row["value"]), "now": float(now["value"]), "drift": drift,
                    "examples_changed": round(abs(drift) * int(row["n"])), "stderr": float(row["stderr"]),
                    "tokens": int(now["n"]), "committed_tokens": int(row["n"])})
        print(f"{path.name:42s} {label:18s} {row['sparsity']:.2f}  {task} acc committed {row['value']:.4f}  "
              f"now {now['value']:.4f}  drift {drift:+.4f} ({out[-1]['examples_changed']} of {int(row['n'])} "
              f"examples; stderr {row['stderr']:.4f})", flush=True)
    return pd.DataFrame(out)


def beyond(drift: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Rows that fail: perplexity beyond ``tolerance`` (relative), accuracy beyond its standard error, other sizes."""
    accuracy = drift["stderr"].notna() if "stderr" in drift else pd.Series(False, index=drift.index)
    limit = drift["stderr"].where(accuracy, tolerance) if "stderr" in drift else tolerance
    return drift[(drift["drift"].abs() > limit) | (drift["tokens"] != drift["committed_tokens"])]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", nargs="+", default=list(TABLES), help="committed grids in data/results/")
    parser.add_argument("--labels", nargs="+", default=list(FAMILIES))
    parser.add_argument("--tolerance", type=float, default=0.005, help="largest allowed |relative drift|")
    parser.add_argument("--task", default="piqa", help="task of the zero-shot sample (default piqa)")
    parser.add_argument("--out", default=None, help="also write the drift table here (CSV)")
    args = parser.parse_args(argv)
    results = Path(__file__).resolve().parents[1] / "data" / "results"
    paths = [Path(t) if Path(t).is_absolute() else results / t for t in args.table]
    missing = [str(p) for p in paths if not p.exists() or not Path(str(p) + ".json").exists()]
    if missing:
        print(f"No committed table (or no sidecar) at: {', '.join(missing)}. Fix: name files in data/results/.",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="acttail-verify-") as root:
        cache = empty_cache(Path(root))
        print(f"empty cache: {cache} (inputs linked: {', '.join(INPUTS)})", flush=True)
        drift = pd.concat([verify_zeroshot(p, args.task) if p.name.startswith("zeroshot_")
                           else verify_table(p, args.labels) for p in paths], ignore_index=True)
    if args.out:
        drift.to_csv(args.out, index=False)
    bad = beyond(drift, args.tolerance)
    for kind, part in drift.groupby(drift["table"].str.startswith("zeroshot_")):
        worst = part.loc[part["drift"].abs().idxmax()]
        size = f"{worst['drift']:+.4f} accuracy" if kind else f"{worst['drift']:+.3%}"
        print(f"\n{len(part)} {'zero-shot' if kind else 'perplexity'} rows re-run from an empty cache; largest "
              f"drift {size} ({worst['table']} {worst['strategy']} @ {worst['sparsity']:.2f})")
    print(f"{len(bad)} beyond {args.tolerance:.1%} (perplexity) or one standard error (accuracy), or on other sizes")
    return 1 if len(bad) else 0


if __name__ == "__main__":
    sys.exit(main())
