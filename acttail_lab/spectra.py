"""Compatibility alias: the spectra moved to :mod:`acttail_lab.spectral.spectra`.

``from acttail_lab.spectra import analyze`` keeps working; new code imports
``acttail_lab.spectral`` (see docs/architecture.md).
"""
from .spectral.spectra import *  # noqa: F401,F403
from .spectral.spectra import analyze, esd, model_spectra  # noqa: F401
