"""Exceptions with messages that name the problem and the fix."""


class ActTailError(Exception):
    """Base class for every error raised on purpose by acttail-lab."""


class ModelNotFoundError(ActTailError, FileNotFoundError):
    """A model id or path could not be resolved."""


class CorruptModelFileError(ActTailError, ValueError):
    """A model file is truncated or corrupt (its header promises more bytes than it has)."""


class UnsupportedArchitectureError(ActTailError, ValueError):
    """The model does not have the seven projections acttail-lab knows how to find."""


class BadWeightsError(ActTailError, ValueError):
    """A weight matrix contains NaN or inf values."""


class DegenerateSpectrumError(ActTailError, ValueError):
    """A spectrum is too small or too degenerate for a power-law fit."""


class CorpusError(ActTailError, ValueError):
    """The corpus could not be found, fetched or is too short."""


class AllocationError(ActTailError, ValueError):
    """An allocation request is invalid (target, eps, alphas, s_max...)."""


class DeviceError(ActTailError, RuntimeError):
    """A device (GPU) was requested but is not available."""


class SparsifierStateError(ActTailError, RuntimeError):
    """A sparsifier was entered twice, or two were stacked on one model."""


class CalibrationError(ActTailError, ValueError):
    """Calibration text too short, or statistics asked for that were not collected."""


class KernelInputError(ActTailError, ValueError):
    """Inputs a sparse GEMV cannot take: wrong dtype, shape, layout, device or sparsity."""


class RotationError(ActTailError, ValueError):
    """A rotation was requested for a projection it does not apply to, or is not orthogonal."""


class DepthError(ActTailError, ValueError):
    """Bad input to a depth measurement (windows, layer index, condition text)."""


class CacheFileError(ActTailError, ValueError):
    """A cache file that cannot be trusted (unreadable, truncated, malformed, or failing its check)."""


class StopForward(Exception):
    """Control flow, not an error: raised by a hook to end a forward pass early (``sparsify.moment_stream``
    stops each pass after the last layer whose inputs it needs); caught where the pass is run."""


class EstimatorError(ActTailError, ValueError):
    """An unknown alpha estimator, or estimator options that do not fit the matrices (FARMS windows)."""


class TaskDataError(ActTailError, ValueError):
    """A zero-shot task that is unknown, has no local data offline, or whose data could not be fetched."""


class ZeroShotError(ActTailError, ValueError):
    """Bad input to a zero-shot run (limit, tokenizer, allocation) or a missing lm-eval install."""
