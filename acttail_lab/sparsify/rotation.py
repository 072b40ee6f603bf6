"""Rotated activation sparsity (LaRoSA): TopK on ``Q^T x`` with ``W Q`` in place of ``W``.

For every decoder layer and input site (``attn_in`` for q/k/v, ``o``,
``mlp_in`` for gate/up, ``down``), ``Q`` is the matrix of eigenvectors of the
uncentred input covariance ``E[x x^T]`` measured on *calibration* text
(:mod:`acttail_lab.sparsify.calibration`), ordered by decreasing eigenvalue. Since
``Q`` is orthogonal, ``W x = (W Q)(Q^T x)``: the rotated model computes the
same function, and TopK acts on ``Q^T x`` where the input's energy is
concentrated in few coordinates (docs/method.md, "Rotation (LaRoSA)").

:class:`Rotation` folds ``W Q`` into the weights of the rotated projections
and rotates their inputs with a forward pre-hook (``x @ Q`` in row form;
projections that share an input share one rotation per call). In a deployed
model the input rotation of ``attn_in`` / ``mlp_in`` would be folded into the
preceding layers; here it is applied online, which doubles the CPU cost of a
forward pass but changes no number. On leaving the context the original
weights are put back (bit for bit; they wait on the CPU, so a GPU holds only
the rotated weights), and each rotated input is freed once the last
projection reading it has run.

Memory (:func:`rotations_for`): one ``Q`` per (layer, site), shared by the
projections reading that site, kept in the model's dtype (float64 for
float32 models) on the layer's device; each second moment is freed from the
statistics as soon as its ``Q`` is built. Rotation needs at least as many
calibration tokens as the widest rotated input (``calibration.moment_tokens``).

:class:`RotatedTopK` = :class:`Rotation` + :class:`acttail_lab.sparsify.topk.TopKSparsifier`
for any allocation (rotation + uniform, rotation + ActTail, ...).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.errors import CalibrationError, RotationError
from ..core.hooks import hooks
from ..core.models import decoder_layers, iter_projections
from ..core.tensors import is_offloaded
from .base import Sparsifier
from .calibration import SITE_OF, ActivationStats
from .topk import TopKSparsifier, resolve_allocation

ROTATABLE = tuple(SITE_OF)
"""Projection kinds whose input can be rotated (the seven TopK sites)."""


def check_kinds(kinds) -> tuple[str, ...]:
    """The projection kinds to rotate, checked against :data:`ROTATABLE`."""
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in ROTATABLE]
    if bad:
        raise RotationError(
            f"Rotation requested for unsupported projection(s) {bad}: only the inputs of the seven decoder "
            f"projections {ROTATABLE} are rotated (embeddings, norms and lm_head are not). Fix: pick kinds from that list.")
    return kinds


def rotation_from_moment(moment: torch.Tensor) -> torch.Tensor:
    """Orthogonal ``Q`` [d, d] (float64): eigenvectors of the symmetric ``moment``, largest eigenvalue first."""
    sym = 0.5 * (moment + moment.T)
    _, vectors = torch.linalg.eigh(sym.to(torch.float64))
    return vectors.flip(-1).contiguous()


def orthogonality_error(q: torch.Tensor) -> float:
    """``max |Q^T Q - I|``: 0 for an exactly orthogonal matrix."""
    q = q.to(torch.float64)
    return float((q.T @ q - torch.eye(q.shape[1], dtype=torch.float64)).abs().max())


def q_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    """The dtype a ``Q`` is kept in for weights of ``weight_dtype``: the model's dtype for 16-bit models
    (fp16/bf16: a quarter of float64), float64 for float32/float64 models (there ``W Q`` and
    :func:`orthogonality_error` stay exact to ~1e-15, as ``measure.related.rotation_check`` requires)."""
    return torch.float64 if weight_dtype in (torch.float32, torch.float64) else weight_dtype


def placement_of(model: nn.Module) -> dict:
    """``{(layer, site): (device, dtype)}``: where each ``Q`` lives (its layer's device, :func:`q_dtype`)."""
    out = {}
    for row, module in iter_projections(model):
        w = module.weight
        out.setdefault((row["layer"], SITE_OF[row["projection"]]), (w.device, q_dtype(w.dtype)))
    return out


def iter_rotations(stats: ActivationStats, layers, kinds=ROTATABLE, release: bool = False):
    """Yield ``((layer, site), Q)`` (float64) one (layer, site) at a time.

    With ``release``, each second moment is taken out of ``stats`` (:meth:`ActivationStats.take_moment`)
    before its eigenvectors are computed, so it is freed as soon as its ``Q`` exists: the moments alive
    only ever decrease while rotations are built.
    """
    if not stats.has_moments:
        raise CalibrationError("Rotation needs the second moments of the inputs. "
                               "Fix: activation_stats(model, moments=True).")
    sites = sorted({SITE_OF[k] for k in check_kinds(kinds)})
    take = stats.take_moment if release else stats.second_moment
    for layer in sorted(set(layers)):
        for site in sites:
            moment = take(layer, site)
            q = rotation_from_moment(moment)
            del moment
            yield (layer, site), q


def rotations_from_stats(stats: ActivationStats, layers, kinds=ROTATABLE, progress: bool = True,
                         release: bool = False, placement: dict | None = None) -> dict:
    """``{(layer, site): Q}`` for every layer in ``layers`` and the sites of ``kinds`` (needs second moments).

    One ``Q`` per (layer, site), shared by every projection reading that site (q/k/v, gate/up). Built one at
    a time (:func:`iter_rotations`); ``release`` frees each moment from ``stats`` once its ``Q`` is built.
    ``placement`` ``{(layer, site): (device, dtype)}`` (:func:`placement_of`) moves each ``Q`` there as soon
    as it is built (float64 only while its eigenvectors are computed); default: float64 on the CPU.
    """
    layers = sorted(set(layers))
    n = len(layers) * len({SITE_OF[k] for k in check_kinds(kinds)})
    out = {}
    for ls, q in tqdm(iter_rotations(stats, layers, kinds, release=release), total=n, desc="rotations",
                      disable=not progress, leave=False):
        if placement is not None and ls in placement:
            device, dtype = placement[ls]
            q = q.to(device=device, dtype=dtype)
        out[ls] = q
    return out


_MEMO: dict = {}


def rotations_for(model: nn.Module, stats: ActivationStats, progress: bool = True) -> dict:
    """Rotations of every layer and site of ``model`` from ``stats``, memoised per statistics key (one per process).

    Streams: each second moment is freed from ``stats`` once its ``Q`` is built, and each ``Q`` is kept in
    :func:`q_dtype` of the model on its layer's device; the rotations stay on ``stats.rotations`` (they
    replace the moments there) and in the memo. Deferred moments (``stats.windows``, what
    ``activation_stats(..., moments=True)`` returns) are collected a group of layers at a time
    (:func:`.moment_stream.streamed_moments`), so at most one group's moments are ever alive.
    """
    key = stats.key or id(stats)
    rotations = _MEMO.get(key)
    if rotations is None:
        rotations = stats.rotations
    if rotations is None and stats.windows is not None:
        rotations = _streamed_rotations(model, stats.windows, progress)
        stats.rotations = rotations
    if rotations is None:
        rotations = rotations_from_stats(stats, range(len(decoder_layers(model))), progress=progress,
                                         release=True, placement=placement_of(model))
        stats.rotations = rotations
    if key not in _MEMO:
        _MEMO.clear()
        _MEMO[key] = rotations
    return rotations


def _streamed_rotations(model: nn.Module, windows: torch.Tensor, progress: bool) -> dict:
    """Rotations of every layer, the second moments collected and freed one group of layers at a time."""
    from .moment_stream import layer_groups, streamed_moments

    placement, out = placement_of(model), {}
    groups = tqdm(streamed_moments(model, windows), total=len(layer_groups(model)), desc="moments + rotations",
                  disable=not progress, leave=False)
    for layers, stats in groups:
        out.update(rotations_from_stats(stats, layers, progress=False, release=True, placement=placement))
        del stats
    return out


class Rotation:
    """Context manager: rotate the inputs of some projections and fold ``W Q`` into their weights.

    Args:
        model: a supported causal LM.
        rotations: ``{(layer, site): Q}`` (see :func:`rotations_from_stats`).
        names: projection names to rotate (default: every projection whose site has a rotation).
    """

    def __init__(self, model: nn.Module, rotations: dict, names=None):
        self.model = model
        self.targets = []
        for row, module in iter_projections(model):
            if names is not None and row["name"] not in names:
                continue
            q = rotations.get((row["layer"], SITE_OF[row["projection"]]))
            if q is None:
                if names is not None:
                    raise RotationError(f"No rotation for {row['name']} (layer {row['layer']}, "
                                        f"site {SITE_OF[row['projection']]}). Fix: compute rotations for that layer.")
                continue
            if is_offloaded(module):
                raise RotationError(f"{row['name']} is offloaded by accelerate (its weight is read from CPU/disk "
                                    "only while it runs), so W Q cannot be folded into it. Fix: load the model with "
                                    "a device_map / max_memory that keeps every decoder layer on an accelerator, "
                                    "or use a method that does not rewrite weights (topk, threshold, cats).")
            if q.shape != (row["d_in"], row["d_in"]):
                raise RotationError(f"Rotation for {row['name']} is {tuple(q.shape)}, the input has {row['d_in']} "
                                    "entries. Fix: compute the rotations on this same model.")
            self.targets.append((row, module, q))
        self._saved, self._memo, self._stack = [], {}, None
        readers: dict = {}
        for row, module, _ in self.targets:
            readers.setdefault((row["layer"], SITE_OF[row["projection"]]), []).append(module)
        self._readers = readers  # (layer, site) -> the rotated projections reading it

    def _fold(self) -> list:
        """Fold ``W Q`` into the weights; returns the input-rotation pre-hooks to install.

        ``W Q`` is computed in float64 and cast to the weight's dtype. The originals are kept for a bit-exact
        restore (``W`` cannot be recovered exactly from the rounded ``W Q``): on the CPU, so a GPU holds
        only the rotated weights. Each group (projections reading one site) gets one input ``Q`` in the
        weights' dtype: the stored ``Q`` itself when it already has that dtype and device.
        """
        pre, cast = [], {}
        with torch.no_grad():
            for row, module, q in self.targets:
                weight = module.weight
                group = (row["layer"], SITE_OF[row["projection"]])
                original = weight.data
                rotated = (original.to(torch.float64) @ q.to(device=weight.device, dtype=torch.float64))
                rotated = rotated.to(weight.dtype)
                self._saved.append((module, original.to("cpu"), original.device))
                weight.data = rotated
                del original
                hq = cast.get(group)
                if hq is None:
                    hq = cast[group] = q.to(device=weight.device, dtype=weight.dtype)
                pre.append((module, self._make_hook(group, hq)))
        return pre

    def _unfold(self) -> None:
        """Put the original weights back (bit for bit) and drop the per-call memo."""
        with torch.no_grad():
            for module, original, device in self._saved:
                module.weight.data = original.to(device)
        self._saved, self._memo = [], {}

    @property
    def active(self) -> bool:
        """True while the weights are rotated (inside a ``with`` block of this Rotation or its RotatedTopK)."""
        return bool(self._saved) or self._stack is not None

    def __enter__(self) -> "Rotation":
        if self.active:
            raise RotationError("This Rotation is already active. Fix: one `with` block at a time.")
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(hooks(pre=self._fold()))
        except BaseException:
            stack.close()
            self._unfold()
            raise
        self._stack = stack
        return self

    def _make_hook(self, group, q: torch.Tensor):
        """Pre-hook: ``x -> x @ Q``, computed once per call for the group and dropped after its last reader."""
        n_readers = len(self._readers[group])

        def hook(module, args):
            x = args[0]
            memo = self._memo.get(group)
            if memo is None or memo[0] is not x or module in memo[2]:
                memo = self._memo[group] = (x, x @ q, set())
            memo[2].add(module)
            if len(memo[2]) >= n_readers:  # every reader of this input has it: free x and x @ Q
                del self._memo[group]
            return (memo[1],) + tuple(args[1:])

        return hook

    def __exit__(self, *exc) -> None:
        stack, self._stack = self._stack, None
        try:
            if stack is not None:
                stack.close()
        finally:
            self._unfold()


class RotatedTopK(Sparsifier):
    """TopK on rotated inputs for any allocation: :class:`Rotation` of the sparsified projections + TopK.

    Args:
        model: a supported causal LM.
        allocation: anything :class:`TopKSparsifier` accepts.
        rotations: ``{(layer, site): Q}``; must cover every projection with sparsity > 0.
        protocol: ``"all"`` or ``"last_half"``.
    ``realised()`` is the TopK sparsifier's (sparsity of the rotated inputs). A :class:`Sparsifier`:
    one active per model, no re-entry; the rotation hooks run before the TopK hooks (TopK sees ``Q^T x``).
    ``INNER`` is the sparsifier class run on the rotated inputs (a TopKSparsifier subclass; ``wina.RotatedWina``
    uses WINA's); its hooks are made after the rotation is folded in, so it sees the rotated weights.
    """

    INNER = TopKSparsifier

    def __init__(self, model: nn.Module, allocation, rotations: dict, protocol: str = "all"):
        table = resolve_allocation(model, allocation)
        names = set(table.loc[table["k"] < table["d_in"], "name"])
        self.rotation = Rotation(model, rotations, names=names)
        self.topk = self.INNER(model, table[["name", "sparsity"]], protocol=protocol)
        super().__init__(model, self.topk.table, protocol, record=self.topk.record)

    def _reset(self) -> None:
        super()._reset()
        self.topk._reset()

    def _hooks(self) -> tuple[list, list]:
        if self.rotation.active:
            raise RotationError("This RotatedTopK's Rotation is already active. Fix: one `with` block at a time.")
        self._folded = True
        rotate = self.rotation._fold()  # its hooks run first: TopK sees Q^T x
        return rotate + self.topk._hooks()[0], []

    def _release(self) -> None:
        self.topk._release()
        if getattr(self, "_folded", False):
            self._folded = False
            self.rotation._unfold()

    def realised(self):
        return self.topk.realised()


# --------------------------------------------------------------------------- registration (sparsify.registry)
from .registry import register_method  # noqa: E402

register_method("rotated", needs="moments")(
    lambda model, allocation, *, protocol, stats, progress: RotatedTopK(
        model, allocation, rotations_for(model, stats, progress=progress), protocol=protocol))
