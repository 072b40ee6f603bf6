"""How predictable are the active FFN inputs? Overlap of active sets across tokens and layers.

"Activation Sparsity Opportunities for Compressing General LLMs" (arXiv
2412.12178) argues that if the inputs a thresholded FFN keeps are predictable,
their weights can be prefetched. This module measures that on a real model.

For an FFN site of layer ``l`` (``mlp_in``: the input of gate/up, in the
residual-stream basis; ``down``: the input of down_proj, one entry per MLP
neuron), the *active set* of a token is the set of entries with ``|x|`` above
the threshold that gives sparsity ``s`` on calibration text
(:meth:`acttail_lab.sparsify.calibration.ActivationStats.threshold`), measured on the
dense model's activations of evaluation text. Per (layer, site, s):

* ``token_jaccard``: mean Jaccard overlap |A_t ∩ A_t+1| / |A_t ∪ A_t+1| of
  consecutive tokens of a window; ``token_hit``: mean |A_t ∩ A_t+1| / |A_t+1|,
  the fraction of the next token's active entries already active now (a
  prefetch hit rate);
* ``layer_jaccard`` / ``layer_hit``: the same between layer ``l`` and ``l+1``
  for one token (NaN at the last layer). Only ``mlp_in`` shares one basis
  across layers (the residual stream); for ``down`` the neurons of two layers
  are unrelated, so there it is a control that should sit at chance;
* ``*_chance``: the expected value for independent random sets of the same
  sizes (intersection ``|A||B|/d``): overlap above it is predictability.
"""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from ..core.errors import ActTailError
from ..core.hooks import hooks
from ..core.models import LoadedModel, iter_projections
from ..sparsify.calibration import ActivationStats

FFN_SITES = {"gate": "mlp_in", "down": "down"}
"""Projection whose pre-hook input is captured -> site name."""


def capture_ffn_inputs(model: nn.Module, windows: torch.Tensor, batch_size: int = 4) -> dict:
    """``{(layer, site): float tensor [n_windows, T, d]}`` of the dense model's FFN inputs on ``windows``."""
    captured: dict = {}

    def grab(layer, site):
        def hook(module, args):
            captured.setdefault((layer, site), []).append(args[0].detach().float().cpu())
        return hook

    pre = [(module, grab(row["layer"], FFN_SITES[row["projection"]]))
           for row, module in iter_projections(model) if row["projection"] in FFN_SITES]
    was_training = model.training
    model.eval()
    try:
        with hooks(pre=pre), torch.inference_mode():
            for batch in windows.split(batch_size):
                model(input_ids=batch.to(next(model.parameters()).device), use_cache=False)
    finally:
        model.train(was_training)
    return {key: torch.cat(parts) for key, parts in captured.items()}


def _pair_stats(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Mean Jaccard, hit rate and their chance levels of paired boolean sets ``a``, ``b`` [..., d]."""
    d = a.shape[-1]
    na, nb = a.sum(-1).double(), b.sum(-1).double()
    inter = (a & b).sum(-1).double()
    union = na + nb - inter
    expected = na * nb / d
    ok = (union > 0) & (nb > 0)
    if not bool(ok.any()):
        return {"jaccard": float("nan"), "jaccard_chance": float("nan"), "hit": float("nan"), "hit_chance": float("nan")}
    return {
        "jaccard": float((inter[ok] / union[ok]).mean()),
        "jaccard_chance": float((expected[ok] / (na[ok] + nb[ok] - expected[ok])).mean()),
        "hit": float((inter[ok] / nb[ok]).mean()),
        "hit_chance": float((expected[ok] / nb[ok]).mean()),
    }


def overlap_rows(inputs: dict, stats: ActivationStats, sparsity: float) -> list[dict]:
    """Rows (layer, site, sparsity, active_fraction, token_*, layer_*) for one sparsity (see the module doc)."""
    masks = {key: x.abs() > stats.threshold(key[0], key[1], sparsity) for key, x in inputs.items()}
    rows = []
    for (layer, site), mask in sorted(masks.items()):
        token = _pair_stats(mask[:, :-1], mask[:, 1:])
        following = masks.get((layer + 1, site))
        nxt = _pair_stats(mask, following) if following is not None else dict.fromkeys(token, float("nan"))
        rows.append({"layer": layer, "site": site, "sparsity": float(sparsity),
                     "active_fraction": float(mask.float().mean()),
                     **{f"token_{k}": v for k, v in token.items()}, **{f"layer_{k}": v for k, v in nxt.items()}})
    return rows


def active_set_overlap(lm: LoadedModel, sparsities=(0.5,), tokens: int = 2048, window: int = 512,
                       corpus: str = "austen", calibration_tokens: int = 8192,
                       stats: ActivationStats | None = None) -> pd.DataFrame:
    """Active-set overlap table of ``lm`` on ``tokens`` evaluation tokens, one row per (sparsity, layer, site).

    Thresholds are calibrated on ``calibration_tokens`` of the calibration split
    (or taken from ``stats``). Columns: see :func:`overlap_rows`.
    """
    from ..core.corpus import corpus_text, token_windows
    from ..sparsify.calibration import activation_stats

    if not isinstance(lm, LoadedModel):
        raise ActTailError("active_set_overlap needs a LoadedModel (model + tokenizer). Fix: load_model(name).")
    windows = token_windows(lm.tokenizer, corpus_text(corpus, "evaluation"), window=window, n_tokens=tokens)
    stats = stats or activation_stats(lm, corpus=corpus, tokens=calibration_tokens, window=window, progress=False)
    inputs = capture_ffn_inputs(lm.model, windows)
    rows = [row for s in sparsities for row in overlap_rows(inputs, stats, s)]
    out = pd.DataFrame(rows)
    out["tokens"] = int(windows.numel())
    return out


def overlap_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over layers per (site, sparsity) of the overlaps and their ratio to chance."""
    cols = ["active_fraction", "token_jaccard", "token_jaccard_chance", "token_hit", "token_hit_chance",
            "layer_jaccard", "layer_jaccard_chance", "layer_hit", "layer_hit_chance"]
    out = df.groupby(["site", "sparsity"])[cols].mean().reset_index()
    out["token_hit_over_chance"] = out["token_hit"] / out["token_hit_chance"]
    out["layer_hit_over_chance"] = out["layer_hit"] / out["layer_hit_chance"]
    return out


__all__ = ["FFN_SITES", "capture_ffn_inputs", "overlap_rows", "active_set_overlap", "overlap_summary"]
