"""Shared fixtures. Tests run single-threaded (docs/notes.md, "One BLAS thread in tests")."""
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def real_model():
    """The real SmolLM2-135M (fetched by `make setup`), loaded once per test session."""
    from acttail_lab.core.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model():
    from acttail_lab.core.models import random_model

    return random_model("llama-tiny", seed=0)


class CharTokenizer:
    """A tiny stand-in tokenizer: one id per character (1..250), optional BOS."""

    def __init__(self, bos=None):
        self.bos_token_id = bos

    def __call__(self, text, add_special_tokens=True):
        ids = [ord(c) % 250 + 1 for c in text]
        if add_special_tokens and self.bos_token_id is not None:
            ids = [self.bos_token_id] + ids
        return {"input_ids": ids}


@pytest.fixture
def char_tokenizer():
    """The CharTokenizer class: ``char_tokenizer()`` or ``char_tokenizer(bos=0)``."""
    return CharTokenizer
