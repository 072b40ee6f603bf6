"""measure.memory_checks: rotation that cannot fit is refused before calibration starts."""
import pytest
import torch

from acttail_lab.core.errors import CalibrationError
from acttail_lab.core.models import iter_projections, random_model
from acttail_lab.measure.memory_checks import check_rotation_memory, rotation_bytes


@pytest.fixture(scope="module")
def model():
    return random_model("llama-tiny", seed=0)


def test_the_count_is_one_float64_q_per_layer_and_site_plus_the_kept_weights(model):
    rows = [(row, m.weight) for row, m in iter_projections(model)]
    per_site = {}  # q/k/v share one input, gate/up another: one Q each
    for r, w in rows:
        site = {"q": "attn", "k": "attn", "v": "attn", "gate": "mlp", "up": "mlp"}.get(r["projection"], r["projection"])
        per_site[(r["layer"], site)] = w.shape[1] ** 2 * 8
    assert len(per_site) == 4 * len({r["layer"] for r, _ in rows})
    found = rotation_bytes(model)
    assert found["q"] == sum(per_site.values())
    assert found["kept"] == sum(w.numel() * 4 for _, w in rows)
    assert rotation_bytes(model.to(torch.bfloat16))["q"] == sum(per_site.values()) // 4  # Q in the model's dtype
    model.to(torch.float32)


def test_rotation_that_cannot_fit_names_the_fix(model):
    with pytest.raises(CalibrationError, match="Fix: load the model in bfloat16"):
        check_rotation_memory(model, ["topk", "rotated"], available=1000)
    check_rotation_memory(model, ["rotated"], available=10**12)  # fits
    check_rotation_memory(model, ["topk", "threshold"], available=1)  # no rotation: no check
