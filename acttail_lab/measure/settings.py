"""The settings of one model run, as one object: which model, on which text, with which budget of tokens, how.

:class:`RunSettings` (frozen) holds what the perplexity grid (``measure.grid.evaluate_grid``), zero-shot runs
and the command line's ``evaluate`` / ``zeroshot`` share: model, corpus, split, evaluation tokens and window,
protocol, xmin rule, device / dtype / device map, batch size, seed, calibration tokens, cache, dense row,
progress. It checks every field that needs neither a model nor the disk when it is made (a bad value raises
the project's error, naming the fix); the checks that read the disk (the corpus) or depend on the strategies
(calibration tokens against a calibrating method) stay with ``measure.grid.check_grid_inputs``.
:meth:`RunSettings.to_dict` is what a sidecar records; :meth:`RunSettings.replace` returns a copy with
fields changed (and checked again).
"""
from __future__ import annotations

import dataclasses
import numbers
import os
from dataclasses import dataclass

import torch

from ..core.corpus import DEFAULT_CORPUS, check_split, check_window
from ..core.errors import ActTailError, AllocationError, CalibrationError
from ..core.models import LoadedModel
from ..core.paths import DEFAULT_MODEL
from ..sparsify.topk import PROTOCOLS
from ..spectral.tails import XMIN_RULES

DISPLAY_FIELDS = ("progress", "log_rows")
"""Fields that change what is printed, never a number: left out of :meth:`RunSettings.to_dict`."""
PERPLEXITY_FIELDS = ("split", "tokens", "window", "protocol")
"""Fields only a perplexity grid reads (a zero-shot run's sidecar leaves them out; its corpus is read for
calibration only, from the calibration split)."""


def check_positive_int(value, name: str, example: int) -> None:
    """An AllocationError naming the fix unless ``value`` is an integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise AllocationError(f"{name}={value!r} must be a positive integer. Fix: pass e.g. {name}={example}.")


def check_protocol(protocol) -> None:
    """An AllocationError naming the fix unless ``protocol`` is one of ``sparsify.topk.PROTOCOLS``."""
    if protocol not in PROTOCOLS:
        raise AllocationError(f"Unknown protocol {protocol!r}. Fix: choose one of {PROTOCOLS}.")


def dtype_name(dtype) -> str:
    """``torch.float16`` or ``"float16"`` -> ``"float16"``; an ActTailError for anything but a torch float dtype."""
    name = str(dtype).replace("torch.", "")
    if not isinstance(getattr(torch, name, None), torch.dtype) or not getattr(torch, name).is_floating_point:
        raise ActTailError(f"dtype={dtype!r} is not a torch floating-point dtype. Fix: pass one of float32, "
                           "float16, bfloat16 (a name or torch.float32 ...).")
    return name


@dataclass(frozen=True)
class RunSettings:
    """How one model run is made (the same for every strategy and target of the run).

    Attributes:
        model: built-in name, Hugging Face id, folder or ``.gguf`` (``core.models.load_model``), or a
            :class:`LoadedModel` (then ``device``, ``dtype`` and ``device_map`` are not used to load it).
        corpus, split: evaluation text (``"austen"``, ``"encyclopedic"``, ``"wikitext2"`` or a text file) and
            its split (``"evaluation"``, ``"calibration"``, ``"all"``); calibration always reads the calibration split.
        tokens, window: evaluation tokens (rounded down to whole windows) and tokens per window.
        protocol: ``"all"`` (sparsify and score every position) or ``"last_half"`` (TEAL's prefill rule).
        xmin: xmin rule of the alphas of every alpha-based strategy that names none (``peak``, ``ks``, ``median``).
        device, dtype, device_map: how the model is loaded (``"cpu"``, ``"cuda"``, ``"auto"``; a float dtype,
            stored by name; e.g. ``"auto"`` to spread a large model over GPUs).
        batch_size: windows per forward pass (perplexity) or lm-eval's batch size (zero-shot).
        seed: torch seed. calibration_tokens: calibration-split tokens of methods that calibrate (None: their
            default). cache: read and write the content-keyed caches. include_dense: add the dense row.
        progress, log_rows: progress bars; one printed line per finished row (display only).
    """

    model: object = DEFAULT_MODEL
    corpus: str = DEFAULT_CORPUS
    split: str = "evaluation"
    tokens: int = 16384
    window: int = 512
    protocol: str = "all"
    xmin: str = "peak"
    device: str = "cpu"
    dtype: str = "float32"
    device_map: str | None = None
    batch_size: int = 4
    seed: int = 0
    calibration_tokens: int | None = None
    cache: bool = True
    include_dense: bool = True
    progress: bool = True
    log_rows: bool = False

    def __post_init__(self):
        if not isinstance(self.model, (str, os.PathLike, LoadedModel)) or not self.model_label.strip():
            raise ActTailError(f"model={self.model!r} is not a model. Fix: pass a built-in name (e.g. "
                               f"{DEFAULT_MODEL!r}), a Hugging Face id, a folder, a .gguf file or a LoadedModel.")
        if isinstance(self.corpus, os.PathLike):
            object.__setattr__(self, "corpus", os.fspath(self.corpus))
        check_protocol(self.protocol)
        check_window(self.window, self.tokens)
        check_positive_int(self.batch_size, "batch_size", 4)
        if self.calibration_tokens is not None and (isinstance(self.calibration_tokens, bool) or not isinstance(
                self.calibration_tokens, numbers.Integral) or self.calibration_tokens < 1):
            raise CalibrationError(f"calibration_tokens={self.calibration_tokens!r} must be a positive integer or "
                                   "None (the method's default). Fix: pass e.g. calibration_tokens=8192.")
        check_split(self.split)
        if self.xmin not in XMIN_RULES:
            raise AllocationError(f"xmin={self.xmin!r} is not an xmin rule. Fix: pass one of {list(XMIN_RULES)}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise ActTailError(f"seed={self.seed!r} must be an integer. Fix: pass e.g. seed=0.")
        if self.device_map is not None and not isinstance(self.device_map, str):
            raise ActTailError(f"device_map={self.device_map!r} must be a name such as 'auto', or None.")
        object.__setattr__(self, "device", str(self.device))
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        for name in ("tokens", "window", "batch_size", "seed"):  # numpy integers -> int (JSON, cache keys)
            object.__setattr__(self, name, int(getattr(self, name)))

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The field names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @property
    def torch_dtype(self) -> torch.dtype:
        """``dtype`` as a torch dtype (``torch.float32`` ...)."""
        return getattr(torch, self.dtype)

    @property
    def model_label(self) -> str:
        """The model as a sidecar names it: the name given, or a loaded model's source."""
        return self.model.source if isinstance(self.model, LoadedModel) else str(self.model)

    def replace(self, **changes) -> "RunSettings":
        """A copy with ``changes`` (field names; a TypeError names an unknown one), checked again."""
        unknown = sorted(set(changes) - set(self.fields()))
        if unknown:
            raise TypeError(f"RunSettings has no field {', '.join(map(repr, unknown))} (fields: "
                            f"{', '.join(self.fields())}).")
        return dataclasses.replace(self, **changes)

    def load(self) -> LoadedModel:
        """Seed torch with ``seed`` and return the model (loaded with device / dtype / device map, or as given)."""
        from ..core.models import load_model

        torch.manual_seed(self.seed)
        if isinstance(self.model, LoadedModel):
            return self.model
        return load_model(self.model, device=self.device, dtype=self.torch_dtype, device_map=self.device_map)

    def to_dict(self, leave_out=()) -> dict:
        """JSON-ready fields for a sidecar: the model by :attr:`model_label`, without :data:`DISPLAY_FIELDS`
        and ``leave_out`` (e.g. :data:`PERPLEXITY_FIELDS` for a zero-shot run)."""
        skip = set(DISPLAY_FIELDS) | set(leave_out)
        out = {name: getattr(self, name) for name in self.fields() if name not in skip}
        if "model" in out:
            out["model"] = self.model_label
        return out

    def zeroshot_options(self) -> dict:
        """The keyword arguments of ``measure.zeroshot.evaluate_zeroshot`` these settings give (seed, dense
        row, batch size, cache, progress, xmin rule, calibration corpus and tokens)."""
        return dict(seed=self.seed, include_dense=self.include_dense, batch_size=self.batch_size, cache=self.cache,
                    progress=self.progress, xmin=self.xmin, corpus=self.corpus,
                    calibration_tokens=self.calibration_tokens)


def merged_fields(settings: RunSettings | None = None, model_arg=None, caller: str = "RunSettings",
                  **overrides) -> dict:
    """The fields of ``settings`` (default: :class:`RunSettings`'s defaults) with ``model_arg`` (a caller's model
    argument, when not None) and
    ``overrides`` put in, NOT yet checked (``RunSettings(**fields)`` checks them). A TypeError, worded as Python
    words it for ``caller``, names an unknown keyword, a ``settings`` that is not a RunSettings, or a model
    given twice."""
    base = settings if settings is not None else RunSettings()
    if not isinstance(base, RunSettings):
        raise TypeError(f"{caller}() got settings={settings!r}, which is not a RunSettings.")
    for name in overrides:
        if name not in RunSettings.fields():
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
    if model_arg is not None:
        if "model" in overrides:
            raise TypeError(f"{caller}() got the model twice (first argument and model=). Fix: pass it once.")
        overrides["model"] = model_arg
    return {**{name: getattr(base, name) for name in RunSettings.fields()}, **overrides}


def resolve_settings(settings: RunSettings | None = None, model_arg=None, **overrides) -> RunSettings:
    """``settings`` (default: :class:`RunSettings`'s defaults) with ``model_arg`` (when not None) and ``overrides``
    (field names) put in, checked (:func:`merged_fields`)."""
    if not overrides and model_arg is None and isinstance(settings, RunSettings):
        return settings
    return RunSettings(**merged_fields(settings, model_arg, **overrides))
