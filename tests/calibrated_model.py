"""A tiny random LLaMA with calibration statistics: the shared fixtures of the calibration,
rotation, threshold and method tests (imported by those modules; each gets its own module-scoped copy)."""
import pytest
import torch

from acttail_lab.core.models import random_model
from acttail_lab.sparsify.calibration import collect_stats

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife. ") * 40


@pytest.fixture(scope="module")
def model():
    return random_model("llama-tiny", seed=0).eval()


@pytest.fixture(scope="module")
def windows(model):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, model.config.vocab_size, (8, 64), generator=g)


@pytest.fixture(scope="module")
def stats(model, windows):
    return collect_stats(model, windows, moments=True, progress=False, key="test")


@pytest.fixture(scope="module")
def eval_windows(model):
    g = torch.Generator().manual_seed(2)
    return torch.randint(0, model.config.vocab_size, (4, 64), generator=g)
