"""One place that names the default model, the data folders and every committed result file.

Inputs: the environment variable ``ACTTAIL_RESULTS_DIR`` (optional) overrides the
folder of committed results (default ``<repo>/data/results``). Outputs: paths only;
nothing here reads or writes a file.
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m"
"""The built-in model every notebook, script and committed table uses by default."""

REPO_DIR = Path(__file__).resolve().parents[2]
"""The repository (an editable install keeps ``data/`` beside the package)."""
DATA_DIR = REPO_DIR / "data"
PUBLISHED_ALPHAS_DIR = DATA_DIR / "reference" / "published_alphas"
RESULTS_DIR = Path(os.environ.get("ACTTAIL_RESULTS_DIR") or DATA_DIR / "results")
"""Where committed result CSVs live (``$ACTTAIL_RESULTS_DIR`` overrides ``<repo>/data/results``)."""

RESULT_FILES = {
    "perplexity": "perplexity_{model}.csv",
    "perplexity_windows": "perplexity_{model}_windows.csv",
    "perplexity_encyclopedic": "perplexity_encyclopedic_{model}.csv",
    "perplexity_encyclopedic_windows": "perplexity_encyclopedic_{model}_windows.csv",
    "upper_reference": "upper_reference_{model}.csv",
    "upper_reference_windows": "upper_reference_{model}_windows.csv",
    "related": "perplexity_related_{model}.csv",
    "perplexity_fitquality": "perplexity_fitquality_{model}.csv",
    "perplexity_fitquality_windows": "perplexity_fitquality_{model}_windows.csv",
    "wina_farms": "perplexity_wina_farms_{model}.csv",
    "wina_farms_windows": "perplexity_wina_farms_{model}_windows.csv",
    "alpha_estimators": "{model}_alpha_estimators.csv",
    "alpha_estimator_correlations": "{model}_alpha_estimator_correlations.csv",
    "farms_spectra": "{model}_farms_spectra.csv",
    "spectra": "{model}_spectra_{rule}.csv",
    "cost_table": "{model}_cost_table.csv",
    "loss_increase": "{model}_loss_increase.csv",
    "correlations": "{model}_correlations.csv",
    "teal_greedy_path": "{model}_teal_greedy_path.csv",
    "threshold_spread": "{model}_threshold_spread.csv",
    "active_sets": "{model}_active_sets.csv",
    "depth": "{model}_depth.csv",
    "depth_variance": "{model}_depth_variance.csv",
    "gemv": "gemv_{kind}.csv",
    "decode": "decode_{kind}.csv",
    "gemv_7b": "gemv_7b_cpu.csv",
    "decode_7b": "decode_7b_cpu_{dtype}_t{threads}.csv",
    "decode_model": "decode_{model}_cpu.csv",
    "zeroshot": "zeroshot_{model}.csv",
}
"""Every committed result table, by name: a file-name pattern under :data:`RESULTS_DIR`."""


def result_path(table: str, model: str = DEFAULT_MODEL, results_dir: str | os.PathLike | None = None,
                **fields: str) -> Path:
    """Path of committed result ``table`` (a key of :data:`RESULT_FILES`) for ``model``.

    ``fields`` fill the other placeholders (``rule`` for spectra, ``kind`` for speed tables).
    """
    if table not in RESULT_FILES:
        raise KeyError(f"Unknown result table {table!r}. Known: {', '.join(RESULT_FILES)}.")
    name = RESULT_FILES[table].format(model=model, **fields)
    return Path(results_dir or RESULTS_DIR) / name
