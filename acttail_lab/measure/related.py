"""Measurements for the related methods: per-token spread of threshold sparsity, and the rotation check.

:func:`threshold_spread` records, per projection, the realised per-token sparsity (mean, std,
5th/95th percentile) of threshold methods on evaluation text; :func:`rotation_check` verifies
that the rotated dense model reproduces the dense logits (raises when it does not).
"""
from __future__ import annotations

import pandas as pd


def threshold_spread(lm, strategies=("teal-threshold",), sparsities=(0.5,), tokens: int = 4096, window: int = 512,
                     corpus: str = "austen", calibration_tokens: int = 8192, progress: bool = True) -> pd.DataFrame:
    """Per projection, how the realised sparsity of calibrated-threshold methods varies from token to token.

    Runs each (strategy, target) on ``tokens`` evaluation tokens with thresholds
    calibrated on ``calibration_tokens`` of the calibration split. Output: one row
    per (strategy, target, projection): layer, projection, name, n_params,
    target_sparsity, threshold, realised_sparsity (mean over tokens), realised_std,
    realised_p05, realised_p95, tokens, strategy, target.
    """
    from ..allocation import allocate, parse_strategy
    from ..core.corpus import corpus_text, token_windows
    from ..core.models import projection_table
    from ..sparsify.methods import calibration_for, make_sparsifier
    from .perplexity import perplexity

    specs = [parse_strategy(s) for s in strategies]
    windows = token_windows(lm.tokenizer, corpus_text(corpus, "evaluation"), window=window, n_tokens=tokens)
    stats = calibration_for(lm, [s.method for s in specs], corpus=corpus, tokens=calibration_tokens, window=window,
                            progress=progress)
    table = projection_table(lm.model)
    parts = []
    for spec in specs:
        for target in sparsities:
            allocation = allocate(table, spec, float(target))
            sparsifier = make_sparsifier(lm.model, allocation, spec.method, stats=stats)
            result = perplexity(lm.model, windows, sparsifier=sparsifier, progress=progress,
                                desc=f"{spec.label} @ {target:g}")
            parts.append(result.projections.assign(strategy=spec.label, target=float(target),
                                                   perplexity=result.perplexity))
    return pd.concat(parts, ignore_index=True)


def rotation_check(model, stats, windows, tolerance: float = 1e-4) -> dict:
    """Does the rotation change nothing without sparsity? Max |logit difference| and max orthogonality error.

    ``stats`` must hold second moments (``activation_stats(..., moments=True)``);
    ``windows`` are evaluation token ids [n, T]. Raises RotationError when the
    logits differ by more than ``tolerance`` x max(1, max |logit|) or a Q is not
    orthogonal to 1e-8 (so a notebook running this fails loudly).
    """
    import torch

    from ..sparsify.rotation import Rotation, orthogonality_error, rotations_for

    rotations = rotations_for(model, stats, progress=False)
    with torch.inference_mode():
        reference = model(input_ids=windows, use_cache=False).logits
        with Rotation(model, rotations):
            rotated = model(input_ids=windows, use_cache=False).logits
    out = {"max_abs_logit_diff": float((reference - rotated).abs().max()),
           "max_abs_logit": float(reference.abs().max()),
           "max_orthogonality_error": max(orthogonality_error(q) for q in rotations.values()),
           "rotations": len(rotations)}
    if out["max_abs_logit_diff"] > tolerance * max(1.0, out["max_abs_logit"]) or out["max_orthogonality_error"] > 1e-8:
        from ..core.errors import RotationError

        raise RotationError(f"The rotated dense model does not reproduce the original: {out}. "
                            "Fix: this is a bug; report it with the model name.")
    return out


