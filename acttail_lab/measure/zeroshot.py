"""Zero-shot downstream accuracy through lm-evaluation-harness, dense or under any strategy x method.

lm-eval's own task definitions, prompts and metrics score the model; we only choose the data
(:mod:`.zeroshot_tasks`: the Hub, or local copies offline) and wrap the run: the model goes into lm-eval's
Hugging Face wrapper (``HFLM(pretrained=model, tokenizer=...)``), and ``lm_eval.simple_evaluate`` runs
inside the sparsifier's ``with`` block (``sparsify.methods.make_sparsifier``), so its forward hooks act on
every forward pass the harness makes and are removed afterwards.

:func:`evaluate_zeroshot` takes a loaded model, strategies (any strategy, any method, as in
``measure.grid``) x sparsities, tasks, a limit (the first ``limit`` examples of each task, the same for
every row) and a seed, and returns a tidy DataFrame, one row per (run, task, metric):
:data:`ZEROSHOT_COLUMNS`. Each (run, task) is cached by content (weights fingerprint, task data, limit,
seed, allocation vector, method, calibration key, lm-eval version), so an interrupted run resumes.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
import warnings

import pandas as pd

from ..core.cache import stable_hash
from ..core.corpus import DEFAULT_CORPUS
from ..core.errors import ZeroShotError
from ..core.fingerprint import weights_fingerprint
from ..core.models import LoadedModel
from ..core.provenance import describe_device
from ..core.result_cache import ResultCache
from ..sparsify.methods import calibration_for, make_sparsifier
from ..sparsify.topk import resolve_allocation, weighted_sparsity
from .grid import (_check_sparsities, _measured_inputs_for, _resolve_specs, alpha_tables, fix_xmin, table_key,
                   allocation_vector)
from .perplexity import input_device
from .zeroshot_tasks import (check_limit, check_tasks, lm_eval_version, offline_env, resolve_data_mode,
                             task_setup)

CACHE_VERSION = 1
ZEROSHOT_COLUMNS = ("strategy", "sparsity", "method", "task", "metric", "value", "stderr", "n", "wall_s",
                    "realised_sparsity", "split", "data", "limit", "seed", "model", "options", "cached")
"""Columns of :func:`evaluate_zeroshot`: ``metric`` is lm-eval's name (acc, acc_norm, perplexity...);
``stderr`` lm-eval's standard error of ``value`` (NaN when it gives none); ``n`` examples scored; ``wall_s``
seconds of the (run, task) evaluation; ``realised_sparsity`` the parameter-weighted fraction of projection
inputs zeroed over every forward pass of that evaluation (0 dense); ``split`` the split scored; ``data``
``local`` or ``hub``."""
DEFAULT_TASKS = ("piqa", "arc_easy", "hellaswag", "lambada_openai")


def check_zeroshot_inputs(strategies, sparsities, tasks, limit, data: str = "auto", xmin: str = "peak"):
    """Every input that can be checked before a model loads: limit, data mode, tasks (offline: local copy
    present), sparsities, strategies and methods, the xmin rule. Returns ``(specs, sparsities, task names)``,
    the specs with their xmin rule fixed (``measure.grid.fix_xmin``)."""
    check_limit(limit)
    names = check_tasks(tasks, resolve_data_mode(data))
    specs = fix_xmin(_resolve_specs(list(strategies or ())), xmin)
    return specs, _check_sparsities(sparsities or (), len(specs)), names


def prepare_tokenizer(tokenizer):
    """The tokenizer with a pad token for batching: kept when set, else the EOS token (with a note on
    stderr); ZeroShotError naming the fix when it has neither."""
    if getattr(tokenizer, "pad_token_id", None) is not None:
        return tokenizer
    if getattr(tokenizer, "eos_token", None) is None:
        raise ZeroShotError("The tokenizer has no pad token and no EOS token, so lm-eval cannot batch requests. "
                            "Fix: set one before the run, e.g. tokenizer.pad_token = tokenizer.unk_token "
                            "(any existing token: padded positions are never scored).")
    tokenizer.pad_token = tokenizer.eos_token
    print(f"[zeroshot] note: the tokenizer had no pad token; using EOS {tokenizer.eos_token!r} for padding "
          "(padded positions are never scored).", file=sys.stderr)
    return tokenizer


def _quiet_lm_eval() -> None:
    for name in ("lm_eval", "lm-eval", "lm_eval.models.huggingface", "lm_eval.evaluator"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _parse(results: dict, task: str) -> list[dict]:
    """lm-eval's ``results[task]`` as (metric, value, stderr) records, plus ``n`` from ``n-samples``."""
    scores = results["results"][task]
    n = int(results.get("n-samples", {}).get(task, {}).get("effective", 0))
    out = []
    for key, value in scores.items():
        if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
            continue
        metric, filt = key.split(",", 1)
        err = scores.get(f"{metric}_stderr,{filt}")
        err = float(err) if isinstance(err, (int, float)) else math.nan
        out.append({"metric": metric if filt == "none" else f"{metric},{filt}", "value": float(value),
                    "stderr": err, "n": n})
    return out


def run_task(lm, setup, task: str, limit: int, seed: int = 0, sparsifier=None, batch_size: int = 16,
             bootstrap_iters: int = 1000) -> dict:
    """One lm-eval evaluation of ``task`` on the first ``limit`` examples, inside ``sparsifier`` (or dense).

    Returns ``{"records": [...], "wall_s", "realised_sparsity"}``; the hooks are removed on return or error.
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    _quiet_lm_eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = HFLM(pretrained=lm.model, tokenizer=prepare_tokenizer(lm.tokenizer), batch_size=batch_size)
    kwargs = dict(model=wrapper, tasks=[task], task_manager=setup.manager, limit=limit, random_seed=seed,
                  numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
                  bootstrap_iters=bootstrap_iters, log_samples=False, verbosity="ERROR")
    start = time.perf_counter()
    with offline_env(setup.mode):
        if sparsifier is None:
            results = simple_evaluate(**kwargs)
            realised = 0.0
        else:
            with sparsifier:
                results = simple_evaluate(**kwargs)
            realised = weighted_sparsity(sparsifier.realised())
    return {"records": _parse(results, task), "wall_s": time.perf_counter() - start,
            "realised_sparsity": realised}


def _mean_sparsity(allocation: pd.DataFrame) -> float:
    """Parameter-weighted mean sparsity of an allocation table (plain mean without ``n_params``)."""
    if "n_params" in allocation:
        return weighted_sparsity(allocation, "sparsity")
    return float(allocation["sparsity"].mean())


def zeroshot_cache(enabled: bool = True) -> ResultCache:
    """Cached (run, task) results: one ``cache_dir("zeroshot")/<key>.json`` each."""
    return ResultCache("zeroshot", version=CACHE_VERSION, fmt="json", enabled=enabled)


def _cached_ok(data: dict) -> bool:
    return (isinstance(data.get("records"), list) and len(data["records"]) > 0
            and all(r["n"] > 0 and math.isfinite(r["value"]) for r in data["records"])
            and 0.0 <= data["realised_sparsity"] <= 1.0)


def _jobs(lm, specs, sparsities, include_dense, corpus, calibration_tokens, progress):
    """(label, target, spec, allocation table) per run (``specs`` with their xmin rule fixed), computing alphas /
    cost tables / calibration once."""
    from ..allocation import allocate

    tables = alpha_tables(lm.model, specs, progress)
    inputs = _measured_inputs_for(lm, specs, corpus, progress)
    stats = calibration_for(lm, [s.method for s in specs], corpus=corpus, tokens=calibration_tokens,
                            progress=progress)
    jobs = [("dense", 0.0, None, None)] if include_dense else []
    for spec, needs in zip(specs, inputs):
        jobs += [(spec.label, float(t), spec, allocate(tables[table_key(spec)], spec, float(t), inputs=needs))
                 for t in sparsities]
    return jobs, stats


def evaluate_zeroshot(lm: LoadedModel, strategies=("uniform", "acttail"), sparsities=(0.5, 0.7),
                      tasks=DEFAULT_TASKS, limit: int = 100, seed: int = 0, *, allocations=None,
                      include_dense: bool = True, data: str = "auto", batch_size: int = 16, cache: bool = True,
                      progress: bool = True, xmin: str = "peak", corpus: str = DEFAULT_CORPUS,
                      calibration_tokens: int | None = None, bootstrap_iters: int = 1000,
                      setup=None) -> pd.DataFrame:
    """Zero-shot accuracy of every (strategy, sparsity) (+ dense) on ``tasks``, through lm-eval.

    Args:
        lm: a loaded model (``core.models.load_model``; ``device_map="auto"`` works, docs/method.md).
        strategies, sparsities: as in ``measure.grid.evaluate_grid`` (any registered strategy and method).
        tasks: lm-eval task names (``lambada`` means ``lambada_openai``); offline only those with local data.
        limit: examples per task (the first ``limit``, identical for every row). seed: lm-eval's seeds.
        allocations: optional ``{label: (allocation DataFrame, method)}`` of ready allocations (checked
            against ``lm``'s projections first: an allocation for another model is an AllocationError).
        data: ``auto`` / ``local`` / ``hub`` (:mod:`.zeroshot_tasks`). batch_size: lm-eval's batch size.
        cache, progress: per-(run, task) result cache; a tqdm bar over runs x tasks.
        xmin, corpus, calibration_tokens: alphas / calibration for the strategies and methods that need them.
        setup: a ready ``zeroshot_tasks.task_setup(tasks, data)`` (e.g. built before the model loaded).
    Returns:
        DataFrame, columns :data:`ZEROSHOT_COLUMNS`, one row per (run, task, metric).
    Raises:
        ZeroShotError / TaskDataError / AllocationError before any evaluation when an input is bad.
    """
    from tqdm.auto import tqdm

    specs, sparsities, _ = check_zeroshot_inputs(strategies, sparsities, tasks, limit, data, xmin)
    ready = dict(allocations or {})
    for alloc, _method in ready.values():
        resolve_allocation(lm.model, alloc)
    prepare_tokenizer(lm.tokenizer)
    setup = setup or task_setup(tasks, data)
    jobs, stats = _jobs(lm, specs, sparsities, include_dense, corpus, calibration_tokens, progress)
    jobs += [(label, _mean_sparsity(alloc), method, alloc) for label, (alloc, method) in ready.items()]
    context = {"v": CACHE_VERSION, "model": lm.source, "weights": weights_fingerprint(lm.model), "limit": limit,
               "seed": seed, "lm_eval": lm_eval_version(), "dtype": str(next(lm.model.parameters()).dtype)}
    rows = []
    bar = tqdm(total=len(jobs) * len(setup.tasks), desc="zero-shot", disable=not progress)
    for label, target, spec, alloc in jobs:
        method = spec if isinstance(spec, str) else (spec.method if spec is not None else None)
        calib = stats.key if stats is not None and method not in (None, "topk") else None
        for task in setup.tasks:
            key = stable_hash({**context, "task": task, "data": setup.data_keys[task], "method": method,
                               "calibration": calib, "allocation": stable_hash(allocation_vector(
                                   None if alloc is None else alloc[["name", "sparsity"]]))}, 32)
            store = zeroshot_cache(cache)
            found = store.load(key, check=_cached_ok)
            cached = found is not None
            if found is None:
                sparsifier = None if alloc is None else make_sparsifier(lm.model, alloc, method or "topk",
                                                                        stats=stats)
                found = run_task(lm, setup, task, limit, seed, sparsifier, batch_size, bootstrap_iters)
                found["device"] = describe_device(input_device(lm.model))
                store.save(key, found)
            options = getattr(spec, "options", None) or {}
            for rec in found["records"]:
                rows.append({"strategy": label, "sparsity": target, "method": method, "task": task, **rec,
                             "wall_s": found["wall_s"], "realised_sparsity": found["realised_sparsity"],
                             "split": setup.splits[task], "data": setup.mode, "limit": limit, "seed": seed,
                             "model": lm.name, "options": json.dumps(dict(options), sort_keys=True, default=str),
                             "cached": cached})
            bar.update(1)
            if progress:
                acc = next((r for r in found["records"] if r["metric"] == "acc"), found["records"][0])
                bar.write(f"[zeroshot] {label:>12s} s={target:.2f} {task:>14s}: {acc['metric']} "
                          f"{acc['value']:.4f} +- {acc['stderr']:.4f} (n={acc['n']}, realised "
                          f"{found['realised_sparsity']:.3f}, {found['wall_s']:.0f} s)")
    bar.close()
    return pd.DataFrame(rows, columns=list(ZEROSHOT_COLUMNS))
