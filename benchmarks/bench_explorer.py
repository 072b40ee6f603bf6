"""Time one explorer update + redraw per control change, against the 200 ms budget.

For each of two tables:
- ``smollm2-135m``: the default model's 210 projections (committed CSVs, or
  computed by the package) with its measured cost table;
- ``llama2-70b``: AlphaPruning's 560 published alphas, with the 210-projection
  cost curves tiled onto its 560 names so the cost path is timed too (a worst
  case: the published source itself has no cost table);

an ``ExplorerWidget`` (one plotly FigureWidget with four panels, no browser attached) receives
many seeded random control changes (S, eps, s_max, power, mapping, granularity,
direction, xmin). Each change is timed from setting the control's value to
the end of its callback (then also a few switches of the alpha source): ``state.update`` (allocation, heat map, histogram,
curve, costs) plus the in-place ``batch_update`` of every figure and the
serialisation of the messages to the front end. Browser rendering is not in
this number; tests/test_browser.py prints the end-to-end time it sees.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_explorer.py [--changes 300] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import platform
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from acttail_lab.report.explorer import DEFAULT_MODEL, ExplorerSettings, ExplorerState
from acttail_lab.report.explorer_sources import XMIN_RULES, AlphaSource, load_cost_table
from acttail_lab.widgets.explorer import SLIDER_BOUNDS, ExplorerWidget  # noqa: E402

BUDGET_MS = 200.0


def tiled_cost(cost: pd.DataFrame, names: list[str], n_params: np.ndarray) -> pd.DataFrame:
    """The 210 measured curves repeated onto ``names`` (same grid), with those projections' n_params."""
    per_name = [g for _, g in cost.groupby("name", sort=False)]
    parts = []
    for i, name in enumerate(names):
        part = per_name[i % len(per_name)].copy()
        part["name"], part["n_params"] = name, int(n_params[i])
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def random_changes(n: int, seed: int, with_xmin: bool) -> list[tuple[str, object]]:
    """``n`` seeded (control, value) pairs, each a real change of one control, in slider steps."""
    rng = np.random.default_rng(seed)
    choices = dict(mapping=["linear", "rank", "power", "log"], granularity=["projection", "block"],
                   direction=["alpha_up", "alpha_down"])
    if with_xmin:
        choices["xmin"] = list(XMIN_RULES)
    names = list(SLIDER_BOUNDS) + list(choices)
    weights = np.array([4.0 if n == "target" else 1.0 for n in names])
    out = []
    for name in rng.choice(names, size=n, p=weights / weights.sum()):
        if name in SLIDER_BOUNDS:
            low, high, step = SLIDER_BOUNDS[name]
            value = round(low + step * int(rng.integers(0, round((high - low) / step) + 1)), 10)
        else:
            value = str(rng.choice(choices[name]))
        out.append((str(name), value))
    return out


def time_changes(widget: ExplorerWidget, changes) -> pd.DataFrame:
    rows = []
    for name, value in changes:
        control = widget.controls[name]
        if control.value == value:
            continue
        start = time.perf_counter()
        control.value = value
        elapsed = (time.perf_counter() - start) * 1000
        rows.append(dict(control=name, ms=elapsed, valid=widget.state.view.valid,
                         update_ms=widget.state.view.seconds * 1000))
    assert widget.errors == [], widget.errors
    return pd.DataFrame(rows)


def report(label: str, n_projections: int, timings: pd.DataFrame) -> None:
    ms = timings["ms"]
    print(f"\n{label}: {n_projections} projections, {len(ms)} changes "
          f"({(~timings['valid']).sum()} impossible settings shown as a message)")
    valid = timings.loc[timings["valid"], "ms"]
    print(f"  update+redraw ms: median {ms.median():.1f}, p95 {ms.quantile(0.95):.1f}, max {ms.max():.1f}"
          f"  (valid settings only: median {valid.median():.1f}, max {valid.max():.1f}; "
          f"state.update alone: median {timings['update_ms'].median():.1f})")
    print(f"  ratio to the {BUDGET_MS:.0f} ms budget: median {ms.median() / BUDGET_MS:.3f}, "
          f"max {ms.max() / BUDGET_MS:.3f} -> {'OK' if ms.max() < BUDGET_MS else 'OVER BUDGET'}")
    per = timings.groupby("control")["ms"].agg(["count", "median", "max"]).round(1)
    print("  per control:\n" + "\n".join("    " + line for line in per.to_string().splitlines()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=300, help="control changes per table")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"bench_explorer: python {platform.python_version()}, {platform.machine()}, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, {args.changes} changes per table, seed {args.seed}")

    small = AlphaSource.for_model(DEFAULT_MODEL)
    start = time.perf_counter()
    for rule in XMIN_RULES:  # first load (CSV or computed) is not a widget update
        small.table(rule)
    small.curves()
    print(f"loaded {DEFAULT_MODEL} tables in {time.perf_counter() - start:.1f} s")
    big = AlphaSource.published("llama2-70b")
    shapes = big.table("peak")
    big = AlphaSource(big.name, {"peak": shapes}, rules=("peak",), label=big.label,
                      cost=tiled_cost(load_cost_table(DEFAULT_MODEL), list(shapes["name"]),
                                      shapes["n_params"].to_numpy()))

    worst = 0.0
    for source, with_xmin in ((small, True), (big, False)):
        state = ExplorerState([source], ExplorerSettings(source=source.name))
        assert state.view.valid, state.view.message
        start = time.perf_counter()
        widget = ExplorerWidget(state)
        build_s = time.perf_counter() - start
        time_changes(widget, random_changes(20, args.seed + 1, with_xmin))  # warm-up (first xmin loads etc.)
        timings = time_changes(widget, random_changes(args.changes, args.seed, with_xmin))
        n = len(state.view.allocation) if state.view.valid else len(source.table("peak"))
        print(f"\n(widget built in {build_s * 1000:.0f} ms)")
        report(source.label, n, timings)
        worst = max(worst, timings["ms"].max())
    # switching the alpha source (first switch to each source includes loading its table)
    sources = [small, AlphaSource.published("llama2-7b"), AlphaSource.published("llama2-70b")]
    widget = ExplorerWidget(ExplorerState(sources, ExplorerSettings(source=small.name)))
    order = [s.name for s in sources[1:]] + [small.name] + [s.name for s in sources[1:]] + [small.name]
    timings = time_changes(widget, [("source", name) for name in order])
    print(f"\nsource switches {' -> '.join(order)}:\n  ms " + ", ".join(f"{x:.1f}" for x in timings["ms"]))
    worst = max(worst, timings["ms"].max())
    print(f"\nworst change overall: {worst:.1f} ms = {worst / BUDGET_MS:.3f} x budget")
    return 0 if worst < BUDGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
