"""Perplexity when one decoder layer is replaced by the identity (its output := its input).

Inputs: a model and token windows. :func:`skip_layer_perplexity` returns one row per layer:
perplexity, nll (nats per scored token), the dense values and ``delta_nll`` (> 0: the layer is
needed). Each row is cached on disk by weights fingerprint, token ids and layer
(:class:`acttail_lab.core.result_cache.ResultCache`), so an interrupted run resumes.
"""
from __future__ import annotations

import contextlib
import math
import sys

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.cache import stable_hash
from ..core.fingerprint import tokens_key, weights_fingerprint
from ..core.hooks import hooks
from ..core.models import decoder_layers, unwrap
from ..core.result_cache import ResultCache
from .depth_profile import (
    _check_layers,
    _eval_mode,
    _hidden_in,
    _with_hidden,
    check_windows,
)
from .perplexity import perplexity

CACHE_VERSION = 1
"""Bump when the cached skip-layer row format or its scoring changes (old rows are then ignored)."""


@contextlib.contextmanager
def skipped_layer(model, layer: int):
    """Context manager: decoder layer ``layer`` returns its input unchanged (the layer becomes the identity)."""
    model = unwrap(model)
    index = _check_layers(model, [layer])[0]

    def hook(module, args, kwargs, output):
        return _with_hidden(output, _hidden_in(args, kwargs))

    with hooks(post=[(decoder_layers(model)[index], hook, True)]):
        yield model



def _skip_key(context: dict, layer: int | None) -> str:
    return stable_hash({"v": CACHE_VERSION, **context, "layer": "dense" if layer is None else int(layer)}, 32)


def skip_cache(enabled: bool = True) -> ResultCache:
    """The on-disk cache of skip-layer rows: one ``cache_dir("depth")/skip-<key>.json`` per layer."""
    return ResultCache("depth", version=CACHE_VERSION, fmt="json", enabled=enabled)


def _skip_ok(data: dict, key: str) -> bool:
    """A cached row is trusted only when complete and self-consistent (perplexity == exp(nll))."""
    return (data.get("key") == key and isinstance(data.get("tokens"), int) and data["tokens"] > 0
            and math.isfinite(data["nll"]) and math.isclose(data["perplexity"], math.exp(data["nll"]), rel_tol=1e-9))


def _read_skip(key: str, enabled: bool = True) -> dict | None:
    """The cached {perplexity, nll, tokens} for ``key``; None when missing or not trustworthy (warns)."""
    data = skip_cache(enabled).load(f"skip-{key}", check=lambda d: _skip_ok(d, key))
    return None if data is None else {k: data[k] for k in ("perplexity", "nll", "tokens")}


def _skip_nll(model: nn.Module, windows: torch.Tensor, layer: int | None, context: dict, cache: bool,
              batch_size: int) -> dict:
    """Perplexity with ``layer`` skipped (None: dense), from the cache when there; adds ``cached``."""
    key = _skip_key(context, layer)
    found = _read_skip(key, cache)
    if found is not None:
        return {**found, "cached": True}
    with (skipped_layer(model, layer) if layer is not None else contextlib.nullcontext()):
        result = perplexity(model, windows, batch_size=batch_size, progress=False)
    measured = {"perplexity": result.perplexity, "nll": result.nll, "tokens": int(result.tokens)}
    skip_cache(cache).save(f"skip-{key}", {"key": key, **measured, "layer": layer, "wall_s": result.wall_s,
                                           "context": context})
    return {**measured, "cached": False}


def skip_layer_perplexity(model, windows: torch.Tensor, layers=None, progress: bool = True, cache: bool = True,
                          batch_size: int = 4) -> pd.DataFrame:
    """Perplexity when each decoder layer in turn is replaced by the identity.

    Args:
        model: a causal LM or :class:`LoadedModel`. windows: LongTensor ``[n, T]``.
        layers: layer indices (None: all). cache: read/write one JSON file per
            layer under ``cache_dir("depth")``, keyed by the weights
            (``core.fingerprint.weights_fingerprint``), a hash of the token ids and the layer,
            written atomically so an interrupted run resumes where it stopped.
        progress: tqdm bar over layers plus one line per layer on stderr.
    Returns:
        One row per layer: layer, perplexity, nll (mean nats per scored token,
        all ``T - 1`` targets per window), dense_perplexity, dense_nll,
        delta_nll = nll - dense_nll (nats; > 0: the layer is needed), tokens, cached.
    """
    model, windows = unwrap(model), check_windows(windows)
    chosen = _check_layers(model, layers)
    context = {"weights": weights_fingerprint(model), "windows": tokens_key(windows)}
    with _eval_mode(model):
        dense = _skip_nll(model, windows, None, context, cache, batch_size)
        rows = []
        for layer in tqdm(chosen, desc="skip layer", disable=not progress):
            row = _skip_nll(model, windows, layer, context, cache, batch_size)
            rows.append({"layer": layer, "perplexity": row["perplexity"], "nll": row["nll"],
                         "dense_perplexity": dense["perplexity"], "dense_nll": dense["nll"],
                         "delta_nll": row["nll"] - dense["nll"], "tokens": row["tokens"], "cached": row["cached"]})
            if progress:
                print(f"[depth] skip layer {layer:2d}: ppl {row['perplexity']:.3f} (dense {dense['perplexity']:.3f}, "
                      f"+{rows[-1]['delta_nll']:.4f} nats){', cached' if row['cached'] else ''}",
                      file=sys.stderr, flush=True)
    return pd.DataFrame(rows)
