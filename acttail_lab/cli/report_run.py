"""Run a checked report plan (:mod:`.report_plan`): measure, execute the notebooks, write the summary page.

Layout of the report folder ``OUT``::

    OUT/report.json              model, size, corpus, settings, versions, seconds per part (written as parts end)
    OUT/results/*.csv (+ .json)  the measured tables, named as in data/results/ (the notebooks read them here)
    OUT/notebooks/NN_*.ipynb     the executed notebooks (papermill: MODEL, MODEL_LABEL, RESULTS_DIR, FAST set)
    OUT/pages/NN_*.html          their pages, without widget state
    OUT/index.html               the summary page (:mod:`.report_summary`)

Every measurement goes through the package's content-keyed caches, so an interrupted report resumes: a re-run
into the same folder recomputes nothing that finished. Parts run in the order of :data:`PARTS`.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from ..core.cache import atomic_write_text
from .options import with_dtype
from .report_plan import MANIFEST, ReportPlan, check_notebooks

PARTS = ("spectra", "perplexity", "sensitivity", "zero-shot", "notebooks", "summary")
ZEROSHOT_TARGET = 0.5
"""The target of the zero-shot runs (dense, and each strategy at 50%)."""


class Manifest:
    """``OUT/report.json``: what the report is, and the seconds each part took (rewritten atomically)."""

    def __init__(self, plan: ReportPlan):
        from ..core.environment import git_state, package_versions

        self.path = plan.out / MANIFEST
        old = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data = {"model": plan.model, "size": plan.size.name, "corpus": plan.corpus,
                     "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(plan.size).items()},
                     "parameters": plan.parameters, "versions": package_versions(), "git": git_state(),
                     "seconds": old.get("seconds", {}), "runs": old.get("runs", 0) + 1}
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str) + "\n")

    @contextmanager
    def part(self, name: str):
        """Time one part; its seconds are saved when it ends (a resumed part's time is that of the resume)."""
        print(f"[report] {name} ...", flush=True)
        start = time.perf_counter()
        yield
        self.data["seconds"][name] = round(time.perf_counter() - start, 1)
        self.save()
        print(f"[report] {name}: {self.data['seconds'][name]:.0f} s", flush=True)


def run_settings(plan: ReportPlan, lm, progress: bool):
    """The report's one :class:`measure.settings.RunSettings` (grid and zero-shot share it; sidecars record it)."""
    from ..measure.settings import RunSettings

    return RunSettings(model=lm, corpus=plan.corpus, tokens=plan.size.tokens, window=plan.size.window, seed=0,
                       progress=progress, log_rows=progress)


def measure(plan: ReportPlan, manifest: Manifest, progress: bool = True) -> Path:
    """Every measured table of the report into ``OUT/results``; returns that folder."""
    import torch

    from ..core.models import load_model
    from ..core.paths import result_path
    from ..measure.settings import PERPLEXITY_FIELDS
    from ..core.results_io import write_results
    from ..measure.grid import evaluate_grid
    from ..measure.grid_tables import write_grid
    from ..spectral import spectra
    from ..spectral.tails import XMIN_RULES

    size, results = plan.size, plan.out / "results"
    results.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    lm = load_model(plan.model)
    with manifest.part("spectra"):
        tables = {}
        for rule in XMIN_RULES:
            tables[rule] = spectra.analyze(lm, xmin=rule, progress=progress)
            path = results / f"{plan.model_key}_spectra_{rule}.csv"
            write_results(tables[rule], path, seed=0, device="cpu", model=plan.model, xmin_rule=rule)
    settings = run_settings(plan, lm, progress)
    with manifest.part("perplexity"):
        runs = evaluate_grid(strategies=size.strategies, sparsities=size.targets, settings=settings)
        write_grid(runs.drop(columns=["cached"]), result_path("perplexity", plan.model_key, results), settings,
                   device=next(lm.model.parameters()).device, command=plan.command, model=plan.model)
    if size.cost_table:
        with manifest.part("sensitivity"):  # the committed tables' settings (scripts/reproduce_sensitivity.py)
            from ..core.models import projection_table
            from ..measure.sensitivity import cost_table, loss_increase_table
            from ..report.correlations import (COST_SETTINGS, LOSS_EVERY, LOSS_SETTINGS, loss_subset,
                                               sensitivity_correlations)

            # the report's corpus (its calibration split), the committed tables' settings, all in the sidecars
            cost = cost_table(lm, seed=0, corpus=plan.corpus, progress=progress, **COST_SETTINGS)
            write_results(cost, results / f"{plan.model_key}_cost_table.csv", seed=0, device="cpu",
                          model=plan.model, corpus=plan.corpus, split="calibration", rows=len(cost), **COST_SETTINGS)
            loss = loss_increase_table(lm, names=loss_subset(projection_table(lm.model)), corpus=plan.corpus,
                                       progress=progress, **LOSS_SETTINGS)
            write_results(loss, results / f"{plan.model_key}_loss_increase.csv", seed=0, device="cpu",
                          model=plan.model, corpus=plan.corpus, split="calibration", rows=len(loss),
                          subset=f"every {LOSS_EVERY}th layer, all kinds", **LOSS_SETTINGS)
            correlations = sensitivity_correlations(tables, cost, loss)
            write_results(correlations, results / f"{plan.model_key}_correlations.csv", seed=0, device="cpu",
                          model=plan.model, xmin_rules=list(XMIN_RULES))
    with manifest.part("zero-shot"):
        from ..measure.zeroshot import evaluate_zeroshot

        zeroshot = settings.replace(batch_size=16)  # lm-eval's batch: requests, not windows
        scores = with_dtype(evaluate_zeroshot(lm, size.strategies, (ZEROSHOT_TARGET,), ",".join(size.zeroshot_tasks),
                                              size.zeroshot_limit, data="local", **zeroshot.zeroshot_options()), lm)
        fields = {**zeroshot.to_dict(leave_out=PERPLEXITY_FIELDS), "model": plan.model}
        seed, fields["requested_device"] = fields.pop("seed"), fields.pop("device")
        write_results(scores, results / f"zeroshot_{plan.model_key}.csv", seed=seed, device="cpu",
                      tasks=list(size.zeroshot_tasks), limit=size.zeroshot_limit, sparsities=[ZEROSHOT_TARGET],
                      command=plan.command, **fields)
    return results


def notebook_parameters(plan: ReportPlan, number: str, results: Path) -> dict:
    """What papermill sets in notebook ``number``'s ``parameters`` cell: the model, its label, the report's
    results folder, FAST for the quick size, and notebook 02's strategies (the report's own)."""
    params = dict(MODEL=plan.model_key if plan.model_key == plan.model else plan.model, MODEL_LABEL=plan.label,
                  RESULTS_DIR=str(results), FAST=plan.size.name == "quick")
    if number == "01":  # the layer shown panel by panel: the middle one; few bootstrap replicates below full
        params.update(LAYER=(plan.layers or 2) // 2, N_BOOT=20 if plan.size.name != "full" else 200)
    if number == "02":
        strategies = list(plan.size.strategies)
        params.update(MAIN_STRATEGIES=strategies, MAP_TARGET=max(t for t in plan.size.targets if t <= 0.7),
                      MAP_STRATEGIES=[s for s in strategies if s.startswith("acttail")])  # they need the spectra only
    return params


def execute_notebooks(plan: ReportPlan, results: Path, manifest: Manifest) -> list[Path]:
    """Execute the plan's notebooks with papermill into ``OUT/notebooks`` and export ``OUT/pages``."""
    import papermill
    from nbconvert import HTMLExporter

    executed, pages = plan.out / "notebooks", plan.out / "pages"
    executed.mkdir(exist_ok=True)
    pages.mkdir(exist_ok=True)
    written = []
    with manifest.part("notebooks"):
        for number, source in zip(plan.size.notebooks, check_notebooks(plan.size)):
            target = executed / source.name
            papermill.execute_notebook(str(source), str(target), cwd=str(source.parent), progress_bar=False,
                                       parameters=notebook_parameters(plan, number, results))
            exporter = HTMLExporter()
            body, _ = exporter.from_filename(str(target))
            page = pages / (source.stem + ".html")
            atomic_write_text(page, body)
            written.append(page)
    return written


def run_report(plan: ReportPlan, progress: bool = True) -> Path:
    """Measure, execute the notebooks, write the summary page; returns ``OUT/index.html``."""
    from .report_summary import write_summary

    plan.out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(plan)
    results = measure(plan, manifest, progress)
    pages = execute_notebooks(plan, results, manifest)
    with manifest.part("summary"):
        index = write_summary(plan, results, pages, manifest.data)
    return index
