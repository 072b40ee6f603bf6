"""The evaluation grid: perplexity of every (strategy, sparsity) on the same windows, cached per row.

:func:`evaluate_grid` checks every input before a model loads (:func:`check_grid_inputs`),
computes what the strategies need once (alphas, cost tables, greedy paths, calibration
statistics), allocates, sparsifies by each spec's method, and returns one row per run
(:data:`GRID_COLUMNS`). Each row is cached by content (weights fingerprint, token ids,
allocation vector, method, calibration key), so an interrupted grid resumes.
"""
from __future__ import annotations

import json
import math
import numbers
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ..allocation.solver import check_fraction
from ..core.cache import stable_hash
from ..core.corpus import (
    check_corpus,
    check_split,
    check_window,
    corpus_text,
    token_windows,
)
from ..core.errors import AllocationError, CalibrationError
from ..core.fingerprint import tokens_key, weights_fingerprint
from ..core.models import LoadedModel, load_model, projection_table
from ..core.provenance import describe_device
from ..core.result_cache import ResultCache
from ..sparsify.methods import calibration_for, make_sparsifier, resolve_spec
from ..sparsify.registry import get_method
from ..sparsify.topk import weighted_sparsity
from .grid_tables import WINDOW_COLUMN
from .memory_checks import check_rotation_memory
from .perplexity import input_device, perplexity
from .settings import RunSettings, check_positive_int, check_protocol, dtype_name, merged_fields

CACHE_VERSION = 2
"""Bump when the cached row format or the scoring changes (old rows are then ignored)."""

GRID_COLUMNS = ("strategy", "sparsity", "perplexity", "nll", "tokens", "realised_sparsity", "protocol",
                "window", "model", "corpus", "split", "xmin_rule", "options", "wall_s", "device", "dtype", "cached",
                "method", "kinds", "realised_std")
"""Columns of :func:`evaluate_grid`. ``sparsity`` is the target over the projections that get a budget
(``kinds``; all when empty); ``realised_sparsity`` is always the parameter-weighted fraction of *all*
projection weights the run skips; ``realised_std`` the parameter-weighted mean of the per-token standard
deviation of each projection's sparsity (0 for TopK, which is exact per token)."""


# --------------------------------------------------------------------------- one perplexity


# --------------------------------------------------------------------------- cache keys

def allocation_vector(allocation) -> list | None:
    """The ``[name, sparsity]`` pairs of an allocation (DataFrame or dict), rounded to 1e-12; None for dense."""
    if allocation is None:
        return None
    if isinstance(allocation, pd.DataFrame):
        pairs = zip(allocation["name"], allocation["sparsity"])
    elif isinstance(allocation, dict):
        pairs = allocation.items()
    else:
        return [["*", round(float(allocation), 12)]]
    return [[str(n), round(float(s), 12)] for n, s in pairs]


def row_key(context: dict, allocation, method: str = "topk", calibration: str | None = None) -> str:
    """Cache key of one grid row: the run context, a hash of the sparsity vector and, for methods other
    than TopK, the method and the key of its calibration statistics."""
    extra = {} if method == "topk" else {"method": method, "calibration": calibration}
    return stable_hash({"v": CACHE_VERSION, **context, **extra,
                        "allocation": stable_hash(allocation_vector(allocation))}, 32)


def token_spread(projections: pd.DataFrame | None) -> float:
    """Parameter-weighted mean of the per-token sparsity std of each projection (0 without the column)."""
    if projections is None or "realised_std" not in projections:
        return 0.0
    return weighted_sparsity(projections, "realised_std")


_MEASURED = ("perplexity", "nll", "tokens", "realised_sparsity", "wall_s", "device", WINDOW_COLUMN)
_OPTIONAL = ("realised_std",)


def eval_cache(enabled: bool = True) -> ResultCache:
    """The on-disk cache of grid rows: one ``cache_dir("eval")/<row_key>.json`` per row."""
    return ResultCache("eval", version=CACHE_VERSION, fmt="json", enabled=enabled)


def _row_ok(data: dict, key: str) -> bool:
    """A cached row is trusted only when complete and self-consistent (perplexity == exp(nll))."""
    return (data.get("key") == key and all(f in data for f in _MEASURED)
            and isinstance(data["tokens"], int) and data["tokens"] > 0
            and math.isfinite(data["nll"]) and math.isclose(data["perplexity"], math.exp(data["nll"]), rel_tol=1e-9)
            and 0.0 <= data["realised_sparsity"] <= 1.0
            and _windows_ok(data[WINDOW_COLUMN], data["nll"]))


def _windows_ok(window_nll, nll: float) -> bool:
    """Per-window losses are present and average to the row's NLL."""
    return (isinstance(window_nll, list) and len(window_nll) > 0
            and math.isclose(sum(window_nll) / len(window_nll), nll, rel_tol=1e-9, abs_tol=1e-12))


def _read_cached(key: str, enabled: bool = True) -> dict | None:
    """The cached measurements for ``key``, or None when missing, unreadable or inconsistent (warns)."""
    data = eval_cache(enabled).load(key, check=lambda d: _row_ok(d, key))
    if data is None:
        return None
    return {**{f: data[f] for f in _MEASURED}, **{f: data.get(f, 0.0) for f in _OPTIONAL}}


def _write_cached(key: str, measured: dict, context: dict, enabled: bool = True) -> None:
    eval_cache(enabled).save(key, {"key": key, **measured, "context": context})


# --------------------------------------------------------------------------- the grid
def _resolve_specs(strategies):
    """Each strategy (text, preset or StrategySpec) as the one typed spec of its run, parsed once
    (``sparsify.methods.resolve_spec``: strategy, options and method checked)."""
    from ..allocation import StrategySpec

    if isinstance(strategies, (str, StrategySpec)):
        strategies = [strategies]
    return [resolve_spec(s) for s in strategies]


def _check_sparsities(sparsities, n_strategies: int) -> list[float]:
    """The targets as floats, each a finite number in [0, 1); at least one when there are strategies."""
    if isinstance(sparsities, (int, float)) and not isinstance(sparsities, bool):
        sparsities = [sparsities]
    if isinstance(sparsities, (str, bytes)) or not hasattr(sparsities, "__iter__"):
        raise AllocationError(f"sparsities={sparsities!r} is not a sequence of numbers. "
                              "Fix: pass e.g. sparsities=(0.5, 0.6, 0.7).")
    values = [check_fraction(value, "sparsity") for value in sparsities]
    if n_strategies and not values:
        raise AllocationError("sparsities is empty, so no strategy would be evaluated. Fix: pass at least one "
                              "target, e.g. sparsities=(0.5,), or strategies=() for the dense row only.")
    return values


_CHECKED = ("protocol", "window", "tokens", "corpus", "split", "batch_size", "calibration_tokens")
"""The run settings :func:`check_grid_inputs` checks, in the order of its parameters after the sparsities."""


def check_grid_inputs(strategies, sparsities, protocol: str, window: int, tokens: int, corpus, split: str,
                      batch_size: int = 4, calibration_tokens: int | None = None) -> tuple[list, list[float]]:
    """Every input of :func:`evaluate_grid` that can be checked without a model, in this order: sparsities,
    strategies (parsed once, method registered), protocol, window / tokens (and batch size, calibration
    tokens when a method calibrates), corpus (``core.corpus.check_corpus``: no text read), split.

    Returns the typed specs and the sparsities as floats; raises an ActTailError naming the fix.
    """
    from ..allocation import StrategySpec

    if isinstance(strategies, (str, StrategySpec)):
        strategies = [strategies]
    strategies = list(strategies)
    targets = _check_sparsities(sparsities, len(strategies))
    specs = _resolve_specs(strategies)
    check_protocol(protocol)
    check_window(window, tokens)
    check_positive_int(batch_size, "batch_size", 4)
    calibrated = sorted({spec.method for spec in specs if get_method(spec.method).needs})
    if calibrated and calibration_tokens is not None and (
            isinstance(calibration_tokens, bool) or not isinstance(calibration_tokens, numbers.Integral)
            or calibration_tokens < window):
        raise CalibrationError(f"calibration_tokens={calibration_tokens!r} is fewer than one window of {window} "
                               f"tokens, and the {', '.join(calibrated)} method(s) calibrate on whole windows. "
                               f"Fix: pass calibration_tokens >= window, e.g. calibration_tokens={window * 16}.")
    check_corpus(corpus)
    check_split(split)
    return specs, targets


def table_key(spec) -> tuple[str, str] | None:
    """The (estimator, xmin rule) of the alphas a spec reads (None when it reads no alpha); fix the rule
    first (``allocation.presets.with_xmin``)."""
    if not spec.entry.needs_alpha:
        return None
    return spec.resolved.get("estimator", "plain"), spec.resolved["xmin"]


def alpha_tables(model: nn.Module, specs, progress: bool = False) -> dict:
    """One table per distinct :func:`table_key` of ``specs`` (the projection table under None), each
    computed once (``spectra.analyze`` caches them on disk)."""
    from ..spectral.spectra import analyze

    tables = {}
    for key in dict.fromkeys(table_key(spec) for spec in specs):
        tables[key] = (projection_table(model) if key is None
                       else analyze(model, xmin=key[1], progress=progress, estimator=key[0]))
    return tables


def fix_xmin(specs, xmin: str) -> list:
    """``specs`` with the xmin rule of every alpha-based one fixed to ``xmin`` unless it names its own
    (``allocation.presets.with_xmin``: a rule other than the default is then named in the label)."""
    from ..allocation.presets import with_xmin
    from ..spectral.tails import XMIN_RULES

    if xmin not in XMIN_RULES:
        raise AllocationError(f"xmin={xmin!r} is not an xmin rule. Fix: pass one of {list(XMIN_RULES)}.")
    return [with_xmin(spec, xmin) for spec in specs]


def _cost_input(lm: LoadedModel, corpus: str, progress: bool, **params) -> pd.DataFrame:
    """The calibration cost table (cached by ``sensitivity``)."""
    from .sensitivity import cost_table

    return cost_table(lm, corpus=corpus, progress=progress, **params)


def _greedy_path_input(lm: LoadedModel, corpus: str, progress: bool, **params) -> pd.DataFrame:
    """TEAL's greedy path on calibration text (cached by ``teal_greedy``), e.g. at ``s_max``."""
    from . import teal_greedy

    return teal_greedy.greedy_path(lm, corpus=corpus, progress=progress, **params)


MEASURED_INPUTS = {"cost": _cost_input, "greedy_path": _greedy_path_input}
"""How each measured input a strategy can read (``StrategyEntry.inputs``) is computed, by input name."""


def _measured_inputs_for(lm: LoadedModel, specs, corpus: str, progress: bool = False) -> list[dict]:
    """Per spec, the measured tables its strategy reads (``spec.entry.inputs``), each computed once per
    distinct (input, parameters): two teal-greedy specs with different ``s_max`` get one path each."""
    computed: dict = {}
    out = []
    for spec in specs:
        inputs = {}
        for name, params in spec.entry.inputs(spec.resolved).items():
            if name not in MEASURED_INPUTS:
                raise AllocationError(f"Strategy {spec.strategy!r} reads the measured input {name!r}, which "
                                      f"evaluate_grid cannot compute (it knows {', '.join(MEASURED_INPUTS)}). "
                                      "Fix: add it to measure.grid.MEASURED_INPUTS.")
            key = (name, stable_hash(params))
            if key not in computed:
                computed[key] = MEASURED_INPUTS[name](lm, corpus, progress, **params)
            inputs[name] = computed[key]
        out.append(inputs)
    return out


def evaluate_grid(model_name=None, strategies=("uniform", "acttail"), sparsities=(0.5, 0.6, 0.7, 0.8),
                  settings: RunSettings | None = None, **overrides) -> pd.DataFrame:
    """Perplexity for every (strategy, target sparsity) pair, plus a dense row, on the same windows.

    Args:
        model_name: built-in name, HF id, folder or .gguf (see ``load_model``), or an already loaded
            :class:`LoadedModel` (then device/dtype/device_map are ignored); None: ``settings.model``.
        strategies: preset labels or ``NAME[k=v;...]`` texts (``allocation.parse_strategy``)
            or StrategySpec objects.
        sparsities: targets (parameter-weighted mean fraction of inputs zeroed), each in [0, 1).
        settings: how the run is made (:class:`~acttail_lab.measure.settings.RunSettings`: model, corpus, split,
            tokens, window, protocol, xmin, device, dtype, device_map, batch_size, seed, calibration_tokens,
            cache, include_dense, progress, log_rows); default: its defaults (16,384 evaluation tokens of the
            default corpus in windows of 512, protocol ``all``, xmin ``peak``, cpu, float32, seed 0, cached).
        overrides: any of those fields by keyword, put over ``settings`` (``evaluate_grid(lm, tokens=1024)``
            is ``evaluate_grid(lm, settings=RunSettings(tokens=1024))``). In short: tokens / window are the
            evaluation tokens (rounded down to whole windows) and the window length; xmin fixes the rule of
            every alpha-based strategy that names none (a label then names any other rule:
            ``acttail-block[xmin=ks]``; :func:`fix_xmin`); log_rows prints one line per finished row to stderr;
            calibration_tokens: calibration-split tokens for methods that need statistics (rotated, threshold,
            cats; ``sparsify.methods.calibration_for``; None: 8192, or for rotation at least the widest
            projection input in whole windows).
    Returns:
        DataFrame, one row per run, columns :data:`GRID_COLUMNS` then :data:`WINDOW_COLUMN` (per-window
        losses; :func:`window_table` makes them a table). ``tokens`` is the number of scored tokens;
        ``options`` the strategy options as JSON.
    Raises:
        TypeError for an unknown keyword; ActTailError (AllocationError, CalibrationError, CorpusError) from
        :func:`check_grid_inputs` (in its order) and ``RunSettings`` before any model is loaded.
    """
    from ..allocation import allocate

    # every check that needs no model runs before one is loaded (seconds here, minutes for a 7B model)
    fields = merged_fields(settings, model_name, caller="evaluate_grid", **overrides)
    specs, sparsities = check_grid_inputs(strategies, sparsities, *(fields[name] for name in _CHECKED))
    run = RunSettings(**fields)
    specs = fix_xmin(specs, run.xmin)
    torch.manual_seed(run.seed)
    lm = run.model if isinstance(run.model, LoadedModel) else load_model(
        run.model, device=run.device, dtype=run.torch_dtype, device_map=run.device_map)
    model, progress = lm.model, run.progress
    windows = token_windows(lm.tokenizer, corpus_text(run.corpus, run.split), window=run.window,
                            n_tokens=run.tokens)
    tables = alpha_tables(model, specs, progress)  # one per (alpha estimator, xmin rule)
    model_dtype = next(model.parameters()).dtype
    dev = input_device(model)
    context = {
        "model": lm.source, "weights": weights_fingerprint(model), "corpus": str(run.corpus), "split": run.split,
        "window": run.window, "tokens": run.tokens, "windows": tokens_key(windows),
        "protocol": run.protocol, "dtype": dtype_name(model_dtype), "device": dev.type,
    }
    common = dict(protocol=run.protocol, window=run.window, model=lm.name, corpus=str(run.corpus), split=run.split,
                  dtype=dtype_name(model_dtype))

    measured_inputs = _measured_inputs_for(lm, specs, run.corpus, progress)
    check_rotation_memory(model, [spec.method for spec in specs])  # before hours of calibration, not after
    stats = calibration_for(lm, [spec.method for spec in specs], corpus=run.corpus, tokens=run.calibration_tokens,
                            window=run.window, progress=progress)
    jobs = [("dense", 0.0, None, None)] if run.include_dense else []
    for spec, inputs in zip(specs, measured_inputs):
        for target in sparsities:
            alloc = allocate(tables[table_key(spec)], spec, float(target), inputs=inputs)
            jobs.append((spec.label, float(target), spec, alloc))
    bench = _Bench(model, windows, context, common, stats, dev, run)
    return pd.DataFrame([_run_row(job, bench) for job in jobs], columns=[*GRID_COLUMNS, WINDOW_COLUMN])


@dataclass(frozen=True)
class _Bench:
    """What every row of one grid shares: the model, its token windows, the row-cache context, the columns
    every row repeats, the calibration statistics, the input device and the run settings."""
    model: nn.Module
    windows: torch.Tensor
    context: dict
    common: dict
    stats: object
    device: torch.device
    run: RunSettings


def _run_row(job: tuple, bench: _Bench) -> dict:
    """One grid row of ``job`` = (label, target, spec, allocation): read from the row cache, or measured
    (and cached); one line on stderr when ``run.log_rows``."""
    label, target, spec, allocation = job
    model, windows, context, common, stats, dev, run = (bench.model, bench.windows, bench.context, bench.common,
                                                        bench.stats, bench.device, bench.run)
    protocol, progress = run.protocol, run.progress
    method = spec.method if spec is not None else "topk"
    key = row_key(context, None if allocation is None else allocation[["name", "sparsity"]], method,
                  stats.key if stats is not None and method != "topk" else None)
    measured = _read_cached(key, run.cache)
    cached = measured is not None
    if measured is None:
        sparsifier = (None if allocation is None else
                      make_sparsifier(model, allocation, method, protocol=protocol, stats=stats, progress=progress))
        result = perplexity(model, windows, allocation, protocol=protocol, batch_size=run.batch_size,
                            progress=progress, seed=run.seed, desc=f"{label} @ {target:g}", sparsifier=sparsifier)
        measured = {**{f: getattr(result, f) for f in _MEASURED if f not in ("device", WINDOW_COLUMN)},
                    WINDOW_COLUMN: list(result.window_nll),
                    "device": describe_device(dev), "realised_std": token_spread(result.projections)}
        _write_cached(key, measured, context, run.cache)
    needs_alpha = spec is not None and spec.entry.needs_alpha
    row = {"strategy": label, "sparsity": target, **measured, **common,
           "xmin_rule": spec.resolved["xmin"] if needs_alpha else None,
           "options": json.dumps(dict(spec.options) if spec else {}, sort_keys=True, default=str),
           "cached": cached, "method": method if spec is not None else None,
           "kinds": "+".join(spec.kinds) if spec is not None and spec.kinds else None}
    row[WINDOW_COLUMN] = tuple(measured[WINDOW_COLUMN])
    if run.log_rows:
        print(f"[evaluate] {label:>14s} s={target:.3f}: ppl {row['perplexity']:.4f} "
              f"(realised {row['realised_sparsity']:.4f}, {row['tokens']} tokens, "
              f"{row['wall_s']:.1f} s{', cached' if cached else ''})", file=sys.stderr, flush=True)
    return row
