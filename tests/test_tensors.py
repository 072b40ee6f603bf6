"""Every tensor-to-numpy crossing goes through core.tensors.to_numpy (safe for GPU, grad and bf16 tensors)."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import acttail_lab
from acttail_lab.core.tensors import to_numpy


def test_to_numpy_handles_grad_and_bfloat16():
    x = torch.tensor([1.5, -2.0], requires_grad=True)
    with pytest.raises(RuntimeError):
        x.numpy()  # what a bare .numpy() does
    assert np.array_equal(to_numpy(x), [1.5, -2.0])
    b = torch.tensor([1.0, 3.0], dtype=torch.bfloat16)
    out = to_numpy(b)
    assert out.dtype == np.float32 and np.array_equal(out, [1.0, 3.0])
    assert to_numpy(torch.tensor([2.0, 7.0]), np.int64).dtype == np.int64


def test_to_numpy_moves_off_other_devices(monkeypatch):
    """A tensor on another device is moved to the CPU first (checked with a recording stand-in)."""
    moved = []

    class OnGpu:
        device = torch.device("cuda", 0)
        dtype = torch.float32

        def detach(self):
            return self

        def to(self, where):
            moved.append(where)
            return torch.tensor([4.0])

    assert np.array_equal(to_numpy(OnGpu()), [4.0]) and moved == ["cpu"]


def test_no_bare_numpy_call_on_a_tensor_that_may_sit_on_a_gpu():
    """Outside core/tensors.py a `.numpy()` call must be on a value visibly on the CPU (the line says so)."""
    root = Path(acttail_lab.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "tensors.py" and path.parent.name == "core":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\.numpy\(\)", line) and "cpu" not in line.lower():
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not offenders, "use core.tensors.to_numpy:\n" + "\n".join(offenders)
