"""How an allocation is applied to a running model: one factory for every method.

An allocation (:func:`acttail_lab.allocation.allocate`) says how sparse each
projection input should be; the *method* (``StrategySpec.method``) says how
that sparsity is produced:

=========== ================================================ ==========================
method      what runs                                        calibration needed
=========== ================================================ ==========================
topk        exact per-token TopK (:class:`TopKSparsifier`)   none
rotated     TopK on LaRoSA-rotated inputs (:class:`RotatedTopK`)  second moments
threshold   TEAL-style |x| > t (:class:`ThresholdSparsifier`) histograms
cats        CATS gate threshold (:class:`CatsSparsifier`)     histograms
wina        TopK of ``|x| * ||W col||`` (:class:`WinaSparsifier`) none
rotated-wina WINA on LaRoSA-rotated inputs (:class:`RotatedWina`) second moments
=========== ================================================ ==========================

Calibration statistics always come from the calibration split (never the
evaluation text): :func:`calibration_for` collects what the methods of a run
need, once.

The methods are the entries of the method registry (:mod:`.registry`): each
registers itself in its own module, imported below.
"""
from __future__ import annotations

from torch import nn

from ..allocation.presets import StrategySpec, make_spec
from ..core.corpus import DEFAULT_CORPUS
from . import rotation, thresholds, topk, wina  # noqa: F401  (the built-in methods register themselves)
from .calibration import ActivationStats, activation_stats, check_moment_tokens, moment_tokens
from .registry import METHODS, get_method

__all__ = ["METHODS", "calibration_for", "check_method", "make_sparsifier", "resolve_spec"]


def check_method(method) -> str:
    """``method`` if it is registered, else an AllocationError listing the registered methods."""
    return get_method(method).name


def resolve_spec(strategy, options=None, label: str | None = None) -> StrategySpec:
    """The one typed spec of a run: ``allocation.make_spec`` (parse ``NAME[k=v;...]`` text or a preset once,
    check the strategy and its options), plus the check that its method is registered."""
    spec = make_spec(strategy, options, label)
    check_method(spec.method)
    return spec


DEFAULT_CALIBRATION_TOKENS = 8192
"""Calibration tokens when none are asked for (raised to the widest input's width for rotation)."""


def calibration_for(lm, methods, corpus: str = DEFAULT_CORPUS, tokens: int | None = None, window: int = 512,
                    progress: bool = True) -> ActivationStats | None:
    """The calibration statistics that ``methods`` need (None when none needs any).

    ``tokens`` (rounded down to whole windows): default :data:`DEFAULT_CALIBRATION_TOKENS`, or, when a
    method needs second moments (rotation), at least the widest projection input in whole windows
    (11008 -> 11264 tokens for LLaMA-2-7B). Too few tokens for rotation is a CalibrationError naming the
    number needed, raised before any forward pass.
    """
    needs = {get_method(m).needs for m in methods} - {None}
    if not needs:
        return None
    moments = "moments" in needs
    if moments:
        needed = moment_tokens(lm)
        if tokens is None:
            tokens = max(DEFAULT_CALIBRATION_TOKENS, -(-needed // window) * window)
        check_moment_tokens((int(tokens) // window) * window, needed, window)
    elif tokens is None:
        tokens = DEFAULT_CALIBRATION_TOKENS
    return activation_stats(lm, corpus=corpus, split="calibration", tokens=tokens, window=window,
                            moments=moments, progress=progress)


def make_sparsifier(model: nn.Module, allocation, method: str = "topk", protocol: str = "all",
                    stats: ActivationStats | None = None, progress: bool = False):
    """A context manager with ``realised()`` that applies ``allocation`` to ``model`` by the registered ``method``."""
    return get_method(method).build(model, allocation, protocol=protocol, stats=stats, progress=progress)
