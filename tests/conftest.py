"""Shared fixtures. Tests run single-threaded (see FIELD-NOTES: shared, noisy machines)."""
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def real_model():
    """The real SmolLM2-135M (fetched by `make setup`), loaded once per test session."""
    from acttail_lab.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model():
    from acttail_lab.models import random_model

    return random_model("llama-tiny", seed=0)
