"""The logits of a model whose every projection keeps only inputs above its calibrated threshold: the reference
the threshold decoding tests (PyTorch kernel, numba kernel) compare against."""
import torch

from acttail_lab.core.models import iter_projections


def threshold_logits(model, ids, thresholds) -> torch.Tensor:
    """Logits of ``model`` on ``ids`` [1, n] with each projection's input masked to ``|x| > threshold`` (hooks)."""
    by_name = dict(zip(thresholds["name"], thresholds["threshold"]))
    handles = [m.register_forward_pre_hook(lambda mod, a, t=by_name[row["name"]]: (a[0] * (a[0].abs() > t),))
               for row, m in iter_projections(model)]
    try:
        with torch.no_grad():
            return model(ids).logits[0]
    finally:
        for h in handles:
            h.remove()
