"""The method registry: how an allocation is applied to a running model, by name.

Each method registers itself at the end of the module that defines it
(``topk.py``: topk; ``rotation.py``: rotated; ``thresholds.py``: threshold,
cats)::

    register_method("topk", needs=None)(lambda model, allocation, *, protocol, stats, progress: ...)

``needs`` is the calibration a method reads: None, ``"histograms"`` or
``"moments"`` (second moments, which include histograms). The factory gets
``(model, allocation, *, protocol, stats, progress)`` and returns a sparsifier
(a context manager with ``realised()``).

This registry is the one list of method names. The allocation layer below
cannot import it, so ``StrategySpec`` checks only that a method is a name;
whether it is registered is checked here, when a spec reaches the sparsify
layer (``methods.resolve_spec``, ``methods.make_sparsifier``,
``methods.calibration_for``). ``methods.py`` imports the built-in modules, so
they are registered whenever ``acttail_lab.sparsify.methods`` is loaded.
A new method is one new module that calls :func:`register_method`, plus an
import line in ``methods.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..allocation.registry import Registry
from ..core.errors import CalibrationError

NEEDS = (None, "histograms", "moments")
"""What calibration a method can need."""


@dataclass(frozen=True)
class Method:
    """A registered method: its name, the calibration it needs, and its factory."""

    name: str
    needs: str | None
    factory: Callable

    def build(self, model, allocation, *, protocol: str = "all", stats=None, progress: bool = False):
        """The method's sparsifier for ``allocation`` on ``model``; CalibrationError when stats are missing."""
        if self.needs is not None and stats is None:
            raise CalibrationError(f"Method {self.name!r} needs calibration statistics. "
                                   f"Fix: pass stats=calibration_for(model, [{self.name!r}]).")
        return self.factory(model, allocation, protocol=protocol, stats=stats, progress=progress)


METHODS: Registry[Method] = Registry("method", " Fix: choose one of those (e.g. uniform[method=threshold]).")
"""Every registered method, by name."""


def register_method(name: str, needs: str | None = None):
    """Decorator: register ``factory(model, allocation, *, protocol, stats, progress) -> sparsifier`` as ``name``."""
    if needs not in NEEDS:
        raise CalibrationError(f"needs={needs!r} is not one of {NEEDS}. Fix: pick one of those.")

    def decorator(factory):
        METHODS.register(name, Method(name, needs, factory))
        return factory

    return decorator


def get_method(name) -> Method:
    """The registered method ``name``; AllocationError listing the registered ones otherwise."""
    return METHODS.get(name)
