"""Models dispatched by accelerate with a device map (layers on different devices, CPU/disk offload).

With one CPU and no GPU, the only split this machine can make is between resident layers and offloaded
ones (parameters on the meta device, read from CPU memory or a disk folder while the layer runs): the same
hooks accelerate installs for ``device_map="auto"`` on several GPUs. Every stage that runs the model goes
through forward hooks and works unchanged; stages that read weights read them where they are stored.
"""
import pytest
import torch

from acttail_lab.core.errors import RotationError
from acttail_lab.core.fingerprint import weights_fingerprint
from acttail_lab.core.models import random_model
from acttail_lab.core.tensors import is_offloaded, stored_weight
from acttail_lab.measure.perplexity import perplexity
from acttail_lab.sparsify import rotation
from acttail_lab.sparsify.calibration import collect_stats
from acttail_lab.spectral.spectra import model_spectra

accelerate = pytest.importorskip("accelerate")
DEVICE_MAP = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
              "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
IDS = torch.randint(0, 256, (4, 48), generator=torch.Generator().manual_seed(0))


@pytest.fixture()
def split(tmp_path):
    """The tiny model with layer 1 offloaded to disk, and the same weights resident."""
    offloaded = accelerate.dispatch_model(random_model("llama-tiny", seed=0), device_map=DEVICE_MAP,
                                          offload_dir=str(tmp_path))
    return offloaded, random_model("llama-tiny", seed=0)


def test_the_split_really_offloads_layer_one(split):
    offloaded, _ = split
    q1 = offloaded.model.layers[1].self_attn.q_proj
    assert q1.weight.device.type == "meta" and is_offloaded(q1)
    assert not is_offloaded(offloaded.model.layers[0].self_attn.q_proj)


@pytest.mark.parametrize("allocation", [None, 0.5])
def test_perplexity_dense_and_topk_match_the_resident_model(split, allocation):
    offloaded, resident = split
    got = perplexity(offloaded, IDS, allocation=allocation, progress=False)
    want = perplexity(resident, IDS, allocation=allocation, progress=False)
    assert got.nll == pytest.approx(want.nll, rel=1e-6) and got.realised_sparsity == want.realised_sparsity


def test_calibration_statistics_match(split):
    offloaded, resident = split
    a = collect_stats(offloaded, IDS, moments=True, progress=False)
    b = collect_stats(resident, IDS, moments=True, progress=False)
    assert a.threshold(1, "down", 0.5) == b.threshold(1, "down", 0.5)
    assert torch.allclose(a.second_moment(1, "o"), b.second_moment(1, "o"))


def test_spectra_and_fingerprints_read_offloaded_weights(split, tmp_path):
    offloaded, resident = split
    got = model_spectra(offloaded, cache=False, progress=False)
    want = model_spectra(resident, cache=False, progress=False)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name
    for mode in ("sampled", "projections", "full"):
        assert weights_fingerprint(offloaded, mode) == weights_fingerprint(resident, mode), mode
    changed = random_model("llama-tiny", seed=0)
    changed.model.layers[1].mlp.down_proj.weight.data[0, 0] += 1.0  # differs only in an offloaded weight
    other = accelerate.dispatch_model(changed, device_map=DEVICE_MAP, offload_dir=str(tmp_path / "other"))
    for mode in ("sampled", "projections", "full"):  # (meta tensors alone would give equal keys)
        assert weights_fingerprint(other, mode) != weights_fingerprint(offloaded, mode), mode
    down = offloaded.model.layers[1].mlp.down_proj
    assert torch.equal(stored_weight(down), resident.model.layers[1].mlp.down_proj.weight)


def test_rotation_refuses_offloaded_weights_with_a_fix(split):
    offloaded, _ = split
    rotations = rotation.rotations_from_stats(collect_stats(offloaded, IDS.repeat(4, 1), moments=True,
                                                            progress=False), range(2), progress=False)
    with pytest.raises(RotationError, match="offloaded by accelerate.*Fix"):
        rotation.Rotation(offloaded, rotations)
