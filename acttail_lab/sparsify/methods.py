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
=========== ================================================ ==========================

Calibration statistics always come from the calibration split (never the
evaluation text): :func:`calibration_for` collects what the methods of a run
need, once.
"""
from __future__ import annotations

from torch import nn

from ..allocation.presets import METHODS, check_method
from ..core.errors import CalibrationError
from .calibration import ActivationStats, activation_stats

NEEDS_STATS = {"topk": None, "rotated": "moments", "threshold": "histograms", "cats": "histograms"}
"""What calibration each method needs: None, histograms, or second moments (which include histograms)."""
assert set(NEEDS_STATS) == set(METHODS)


def calibration_for(lm, methods, corpus: str = "austen", tokens: int = 8192, window: int = 512,
                    progress: bool = True) -> ActivationStats | None:
    """The calibration statistics that ``methods`` need (None when all are ``topk``)."""
    needs = {NEEDS_STATS[check_method(m)] for m in methods} - {None}
    if not needs:
        return None
    return activation_stats(lm, corpus=corpus, split="calibration", tokens=tokens, window=window,
                            moments="moments" in needs, progress=progress)


def make_sparsifier(model: nn.Module, allocation, method: str = "topk", protocol: str = "all",
                    stats: ActivationStats | None = None, progress: bool = False):
    """A context manager with ``realised()`` that applies ``allocation`` to ``model`` by ``method``."""
    from .topk import TopKSparsifier

    method = check_method(method)
    if method == "topk":
        return TopKSparsifier(model, allocation, protocol=protocol)
    if stats is None:
        raise CalibrationError(f"Method {method!r} needs calibration statistics. "
                               "Fix: pass stats=calibration_for(model, [method]).")
    if method == "rotated":
        from .rotation import RotatedTopK, rotations_for

        return RotatedTopK(model, allocation, rotations_for(model, stats, progress=progress), protocol=protocol)
    from .thresholds import CatsSparsifier, ThresholdSparsifier

    cls = ThresholdSparsifier if method == "threshold" else CatsSparsifier
    return cls(model, allocation, stats, protocol=protocol)
