"""Activation statistics of the projection inputs on calibration text.

Rotation (LaRoSA) and calibrated thresholds (TEAL, CATS, FFN thresholding)
both need to know what the projection inputs look like on held-out
calibration text (Sense and Sensibility by default, never the evaluation
split). One dense forward pass over the calibration windows collects, per
decoder layer and per input *site*:

* ``attn_in``: the input of q/k/v (the post-norm hidden state, shared);
* ``o``: the input of o_proj (the attention output);
* ``mlp_in``: the input of gate/up (the post-attention-norm hidden state, shared);
* ``down``: the input of down_proj (``act(gate(x)) * up(x)``);
* ``gate_act``: ``|act(gate(x))|``, the gate activation CATS thresholds.

Statistics kept:

* a histogram of ``log2 |x|`` (:data:`BINS` bins over [:data:`LOG2_LO`,
  :data:`LOG2_HI`], exact zeros counted apart), from which
  :meth:`ActivationStats.threshold` reads the magnitude below which a
  fraction ``s`` of the entries fall (relative bin width 1.4%);
* optionally the uncentred second moment ``E[x x^T]`` (float64), whose
  eigenvectors are the rotation of :mod:`acttail_lab.sparsify.rotation`
  (it needs at least :func:`moment_tokens` tokens; each moment is freed once
  its rotation is built, :meth:`ActivationStats.take_moment`).

:func:`activation_stats` caches the histograms on disk keyed by the weights,
the token ids and the settings (the second moments, ~0.4 GB for SmolLM2, are
kept in memory only, once per process).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.cache import stable_hash
from ..core.corpus import DEFAULT_CORPUS
from ..core.errors import CalibrationError
from ..core.fingerprint import tokens_key, weights_fingerprint
from ..core.hooks import hooks
from ..core.models import (
    INPUT_SITES,
    decoder_layers,
    iter_projections,
    tokenizer_of,
    unwrap,
)
from ..core.result_cache import ResultCache
from ..core.tensors import to_numpy

SITES = ("attn_in", "o", "mlp_in", "down", "gate_act")
"""Input sites per decoder layer (see the module doc)."""
SITE_OF = INPUT_SITES
"""The site whose entries a projection reads (``models.INPUT_SITES``)."""
BINS, LOG2_LO, LOG2_HI = 2048, -24.0, 16.0
"""Histogram of log2|x|: magnitudes below 2**-24 go to the first bin, above 2**16 to the last."""
MIN_TOKENS_HIST = 64
"""Fewest calibration tokens for a threshold (below it the quantiles of a projection's input are noise)."""
STATS_VERSION = 1


@dataclass
class SiteStats:
    """Statistics of one site of one layer: histogram of log2|x|, zero count, optional second moment."""

    d: int
    counts: np.ndarray  # [BINS] int64
    zeros: int = 0
    tokens: int = 0
    moment: torch.Tensor | None = field(default=None, repr=False)  # [d, d] float64, sum of x x^T

    @property
    def entries(self) -> int:
        return int(self.counts.sum()) + self.zeros


@dataclass
class ActivationStats:
    """Per (layer, site) activation statistics from calibration windows (see the module doc).

    ``key`` identifies the model weights, tokens and settings; ``tokens`` is the
    number of calibration tokens seen.
    """

    sites: dict  # (layer, site) -> SiteStats
    tokens: int
    key: str
    has_moments: bool
    rotations: dict | None = field(default=None, repr=False)
    """The rotations built from (and replacing) the second moments, once built (``rotation.rotations_for``)."""
    windows: torch.Tensor | None = field(default=None, repr=False)
    """Calibration token ids whose second moments are *deferred*: :func:`activation_stats` with moments
    collects histograms only, and ``rotation.rotations_for`` streams the moments a group of layers at a time
    (:mod:`.moment_stream`), so all layers' moments are never alive at once."""

    def site(self, layer: int, site: str) -> SiteStats:
        try:
            return self.sites[(int(layer), site)]
        except KeyError:
            raise CalibrationError(f"No calibration statistics for layer {layer}, site {site!r}. "
                                   "Fix: collect them on the same model (activation_stats(model)).") from None

    def threshold(self, layer: int, site: str, sparsity: float) -> float:
        """The magnitude ``t`` such that a fraction ``sparsity`` of the site's entries have ``|x| < t``.

        Read off the log2 histogram by linear interpolation inside a bin; 0.0
        when exact zeros alone reach the fraction.
        """
        stats = self.site(layer, site)
        if stats.tokens < MIN_TOKENS_HIST:
            raise CalibrationError(
                f"Only {stats.tokens} calibration tokens were seen at layer {layer} ({site}); a threshold needs "
                f"at least {MIN_TOKENS_HIST}. Fix: calibrate on more text (tokens=...).")
        want = float(sparsity) * stats.entries
        if want <= stats.zeros:
            return 0.0
        cum = np.cumsum(stats.counts) + stats.zeros
        b = int(np.searchsorted(cum, want))
        b = min(b, BINS - 1)
        below = cum[b - 1] if b > 0 else stats.zeros
        frac = (want - below) / max(stats.counts[b], 1)
        width = (LOG2_HI - LOG2_LO) / BINS
        return float(2.0 ** (LOG2_LO + (b + min(max(frac, 0.0), 1.0)) * width))

    def second_moment(self, layer: int, site: str) -> torch.Tensor:
        """``E[x x^T]`` of the site (float64, [d, d])."""
        stats = self._moment_site(layer, site)
        return stats.moment / stats.tokens

    def take_moment(self, layer: int, site: str) -> torch.Tensor:
        """``E[x x^T]`` of the site, dropped from these statistics (divided in place: no second copy).

        Same numbers as :meth:`second_moment`; afterwards the site holds no moment.
        """
        stats = self._moment_site(layer, site)
        moment, stats.moment = stats.moment, None
        with torch.inference_mode():  # the sums were made there (collect_stats); in place is allowed only there
            return moment.div_(stats.tokens)

    @property
    def moments_held(self) -> int:
        """How many (layer, site) second moments these statistics still hold."""
        return sum(st.moment is not None for st in self.sites.values())

    def _moment_site(self, layer: int, site: str) -> SiteStats:
        stats = self.site(layer, site)
        if stats.moment is None and self.windows is not None:
            raise CalibrationError(
                f"The second moments of these statistics are deferred (layer {layer}, {site}): they are collected "
                "a group of layers at a time when rotations are built. Fix: use rotation.rotations_for(model, "
                "stats), or collect_stats(model, windows, moments=True) for every moment at once.")
        if stats.moment is None and self.has_moments:
            raise CalibrationError(
                f"The second moment of layer {layer} ({site}) was freed once its rotation was built "
                "(rotations_from_stats(..., release=True) / rotations_for). Fix: reuse those rotations, or "
                "collect again (collect_stats(..., moments=True)).")
        if stats.moment is None:
            raise CalibrationError("These statistics were collected without second moments. "
                                   "Fix: activation_stats(..., moments=True) (needed for rotation).")
        if stats.tokens < stats.d:
            raise CalibrationError(
                f"Only {stats.tokens} calibration tokens for a {stats.d}-dimensional input at layer {layer} "
                f"({site}): its covariance is rank-deficient and the rotation would be arbitrary. "
                f"Fix: calibrate on at least {stats.d} tokens (tokens=... / calibration_tokens >= {stats.d}).")
        return stats

    def summary(self) -> pd.DataFrame:
        """One row per (layer, site): d, tokens, zero fraction, median |x| and the 50% / 80% thresholds."""
        rows = []
        for (layer, site), st in sorted(self.sites.items()):
            row = {"layer": layer, "site": site, "d": st.d, "tokens": st.tokens, "zero_fraction": st.zeros / max(st.entries, 1)}
            if st.tokens >= MIN_TOKENS_HIST:
                for s in (0.5, 0.8):
                    row[f"threshold_{int(s * 100)}"] = self.threshold(layer, site, s)
            rows.append(row)
        return pd.DataFrame(rows)


# --------------------------------------------------------------------------- collection
def _log2_histogram(x: torch.Tensor) -> tuple[np.ndarray, int]:
    """Histogram of log2|x| over :data:`BINS` bins and the count of exact zeros."""
    a = x.detach().reshape(-1).abs().float()
    nonzero = a[a > 0]
    zeros = a.numel() - nonzero.numel()
    logs = torch.log2(nonzero).clamp_(LOG2_LO, LOG2_HI - 1e-6)
    counts = torch.histc(logs, bins=BINS, min=LOG2_LO, max=LOG2_HI)
    return to_numpy(counts, np.int64), int(zeros)


def mlp_act_fn(model: nn.Module, layer: int):
    """The activation function of layer ``layer``'s MLP (``act(gate(x)) * up(x)``); it must map 0 to 0."""
    mlp = getattr(decoder_layers(model)[layer], "mlp", None)
    act = getattr(mlp, "act_fn", None)
    if act is None:
        raise CalibrationError(f"Layer {layer} has no mlp.act_fn; gate-activation thresholds (CATS) need a "
                               "gated MLP act(gate(x)) * up(x). Fix: use a LLaMA/Mistral/Qwen/Gemma-style model.")
    if float(act(torch.zeros(1)).abs()) != 0.0:
        raise CalibrationError(f"The MLP activation of layer {layer} does not map 0 to 0, so zeroing a gate "
                               "entry does not silence the neuron. Fix: CATS needs SiLU/GELU-style activations.")
    return act


class Collector:
    """Hooks that add each batch's site inputs to the statistics.

    ``moments``: also sum ``x x^T`` (float64, on the input's device), for the layers in ``moment_layers``
    (all when None). ``histograms``: also count log2|x|; with ``histograms=False`` only the moment layers'
    sites are kept (:mod:`.moment_stream`).
    """

    def __init__(self, model: nn.Module, moments: bool, moment_layers=None, histograms: bool = True):
        self.model, self.moments, self.histograms = model, moments, histograms
        self.moment_layers = None if moment_layers is None else set(moment_layers)
        self.sites: dict = {}
        self._hooks = None

    def _wants_moment(self, layer: int, site: str) -> bool:
        return (self.moments and site != "gate_act"
                and (self.moment_layers is None or layer in self.moment_layers))

    def _add(self, layer: int, site: str, x: torch.Tensor) -> None:
        if not (self.histograms or self._wants_moment(layer, site)):
            return
        x2 = x.detach().reshape(-1, x.shape[-1])
        st = self.sites.get((layer, site))
        if st is None:
            st = self.sites[(layer, site)] = SiteStats(d=x2.shape[1], counts=np.zeros(BINS, dtype=np.int64))
            if self._wants_moment(layer, site):
                st.moment = torch.zeros(x2.shape[1], x2.shape[1], dtype=torch.float64, device=x2.device)
        if self.histograms:
            counts, zeros = _log2_histogram(x2)
            st.counts += counts
            st.zeros += zeros
        st.tokens += x2.shape[0]
        if st.moment is not None:
            xd = x2.to(torch.float64)
            st.moment.addmm_(xd.T, xd)

    def __enter__(self):
        pre, post = [], []
        for row, module in iter_projections(self.model):
            layer, kind = row["layer"], row["projection"]
            if kind in ("q", "o", "gate", "down"):
                site = SITE_OF[kind]
                pre.append((module, lambda m, args, layer=layer, site=site: self._add(layer, site, args[0])))
            if kind == "gate":
                act = mlp_act_fn(self.model, layer)
                post.append((module, lambda m, args, out, layer=layer, act=act:
                             self._add(layer, "gate_act", act(out).abs())))
        self._hooks = hooks(pre=pre, post=post)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        installed, self._hooks = self._hooks, None
        if installed is not None:
            installed.__exit__(None, None, None)


def collect_stats(model, windows: torch.Tensor, moments: bool = True, batch_size: int = 4,
                  progress: bool = True, key: str = "") -> ActivationStats:
    """Run ``model`` densely over ``windows`` ([n, T] token ids) and collect every site's statistics."""
    model = unwrap(model)
    if windows.dim() != 2 or windows.numel() == 0:
        raise CalibrationError(f"Calibration windows must be [n_windows, T] token ids, got shape {tuple(windows.shape)}. "
                               "Fix: use corpus.token_windows on a longer calibration text.")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.inference_mode(), Collector(model, moments) as collector:
            for batch in tqdm(windows.split(batch_size), desc="calibration stats", disable=not progress, leave=False):
                model(input_ids=batch.to(device), use_cache=False)
    finally:
        model.train(was_training)
    return ActivationStats(sites=collector.sites, tokens=int(windows.numel()), key=key, has_moments=moments)


def moment_tokens(model: nn.Module) -> int:
    """Fewest calibration tokens for full-rank second moments: the widest projection input of ``model``.

    A ``d x d`` moment from fewer than ``d`` tokens is rank-deficient (the
    down projection's input, the intermediate size, is the widest: 11008 for
    LLaMA-2-7B). Known from the weight shapes, before any forward pass.
    """
    return max(row["d_in"] for row, _ in iter_projections(unwrap(model)))


def check_moment_tokens(have: int, needed: int, window: int | None = None) -> None:
    """CalibrationError naming ``needed`` (rounded up to whole windows) when ``have`` tokens are too few."""
    if have >= needed:
        return
    whole = -(-needed // window) * window if window else needed
    unit = f" (whole windows of {window})" if window else ""
    raise CalibrationError(
        f"Rotation needs at least {needed} calibration tokens: the widest rotated input has {needed} entries and "
        f"its {needed}x{needed} second moment is rank-deficient from fewer tokens; got {have}. "
        f"Fix: calibration_tokens >= {whole}{unit} (tokens=... for activation_stats), on a calibration text "
        "that long.")


def check_tokens(windows: torch.Tensor, needed: int, what: str) -> None:
    """Raise :class:`CalibrationError` when ``windows`` hold fewer than ``needed`` tokens for ``what``."""
    have = int(windows.numel())
    if have < needed:
        raise CalibrationError(
            f"The calibration text gives {have} tokens; {what} needs at least {needed}. "
            "Fix: use a longer calibration text (corpus=...) or ask for fewer statistics.")


# --------------------------------------------------------------------------- cached entry point
_MEMORY: dict = {}


def _stats_key(model: nn.Module, windows: torch.Tensor) -> str:

    return stable_hash({"v": STATS_VERSION, "weights": weights_fingerprint(model), "bins": [BINS, LOG2_LO, LOG2_HI],
                        "ids": tokens_key(windows)}, 32)


def stats_cache(enabled: bool = True) -> ResultCache:
    """The on-disk histogram cache: ``cache_dir("calibration")/<key>.pt``."""
    return ResultCache("calibration", version=STATS_VERSION, fmt="pt", enabled=enabled)


def _save_histograms(stats: ActivationStats) -> None:
    payload = {"key": stats.key, "tokens": stats.tokens,
               "sites": {f"{layer}|{site}": {"d": st.d, "counts": torch.from_numpy(st.counts), "zeros": st.zeros,
                                             "tokens": st.tokens}
                         for (layer, site), st in stats.sites.items()}}
    stats_cache().save(stats.key, payload)


def _histograms(payload: dict, key: str) -> ActivationStats:
    sites = {}
    for name, st in payload["sites"].items():
        layer, site = name.split("|")
        sites[(int(layer), site)] = SiteStats(d=int(st["d"]), counts=to_numpy(st["counts"], np.int64),
                                              zeros=int(st["zeros"]), tokens=int(st["tokens"]))
    return ActivationStats(sites=sites, tokens=int(payload["tokens"]), key=key, has_moments=False)


def _load_histograms(key: str) -> ActivationStats | None:
    """The cached histograms of ``key``; None when missing or not trustworthy (never trusted half-read)."""
    payload = stats_cache().load(key, check=lambda p: p.get("key") == key and _histograms(p, key) is not None)
    return None if payload is None else _histograms(payload, key)


def activation_stats(model, corpus: str = DEFAULT_CORPUS, split: str = "calibration", tokens: int = 8192,
                     window: int = 512, moments: bool = False, tokenizer=None, windows: torch.Tensor | None = None,
                     cache: bool = True, progress: bool = True) -> ActivationStats:
    """Calibration statistics of ``model`` (a :class:`LoadedModel`, or a module with ``tokenizer=``).

    Args:
        corpus, split, tokens, window: the calibration text (``corpus_text(corpus, split)``), cut into
            ``tokens // window`` windows. Ignored when ``windows`` (token ids [n, T]) is given.
        moments: second moments will be needed (rotation): checks there are enough tokens and keeps the
            windows so that ``rotation.rotations_for`` streams the moments a group of layers at a time
            (:mod:`.moment_stream`); the histograms come from the same one pass (or the disk cache).
        cache: read/write the histogram cache (``cache_dir("calibration")``) and the in-process memo.
    Returns:
        :class:`ActivationStats`.
    Raises:
        CalibrationError: the text gives fewer than :data:`MIN_TOKENS_HIST` tokens (or no whole window).
    """
    from ..core.corpus import corpus_text, token_windows

    lm_model = unwrap(model)
    if windows is None:
        tok = tokenizer_of(model) or tokenizer
        if tok is None:
            raise CalibrationError("No tokenizer: pass a LoadedModel, tokenizer=..., or windows=....")
        try:
            windows = token_windows(tok, corpus_text(corpus, split), window=window, n_tokens=tokens)
        except ValueError as exc:  # text shorter than one window
            raise CalibrationError(f"Calibration text too short: {exc}") from exc
    check_tokens(windows, MIN_TOKENS_HIST, "a calibrated threshold")
    key = _stats_key(lm_model, windows)
    memo = _MEMORY.get(key) if cache else None
    if memo is not None and (memo.has_moments or not moments):
        return memo
    if moments:  # before the forward pass: full-rank moments need as many tokens as the widest input
        check_moment_tokens(int(windows.numel()), moment_tokens(lm_model), windows.shape[1])
    stats = _load_histograms(key) if cache else None
    if stats is None:
        stats = collect_stats(lm_model, windows, moments=False, progress=progress, key=key)
    if moments:
        stats = dataclasses.replace(stats, has_moments=True, windows=windows)
    if cache:
        _save_histograms(stats)
        _MEMORY.clear()  # keep at most one set of second moments alive
        _MEMORY[key] = stats
    return stats


def site_thresholds(stats: ActivationStats, allocation: pd.DataFrame, site_of: dict | None = None) -> pd.DataFrame:
    """The allocation table plus ``threshold``: per projection, the calibrated magnitude cut for its sparsity.

    ``site_of`` maps a projection kind to the site whose histogram is read
    (default :data:`SITE_OF`; CATS reads ``gate_act`` for down). Rows with
    sparsity 0 get threshold 0 (nothing is cut).
    """
    site_of = site_of or SITE_OF
    out = allocation.copy()
    out["threshold"] = [
        0.0 if s <= 0 else stats.threshold(layer, site_of[kind], s)
        for layer, kind, s in zip(out["layer"], out["projection"], out["sparsity"])
    ]
    if not np.all(np.isfinite(out["threshold"])) or (out["threshold"] < 0).any():
        raise CalibrationError("A calibrated threshold is not finite. Fix: check the model weights for NaN/inf.")
    return out
