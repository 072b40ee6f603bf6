"""sparsify.base.Sparsifier: one active sparsifier per model, no re-entry, hooks gone on every exit, realised()."""
import pandas as pd
import pytest
import torch

from acttail_lab.core.errors import AllocationError, SparsifierStateError
from acttail_lab.core.models import decoder_layers, iter_projections, random_model
from acttail_lab.sparsify.base import PROTOCOLS, Sparsifier, ZeroCount
from acttail_lab.sparsify.calibration import collect_stats
from acttail_lab.sparsify.rotation import RotatedTopK, rotations_from_stats
from acttail_lab.sparsify.thresholds import CatsSparsifier, ThresholdSparsifier
from acttail_lab.sparsify.topk import PROTOCOLS as TOPK_PROTOCOLS
from acttail_lab.sparsify.topk import TopKSparsifier, resolve_allocation

IDENTITY = ["layer", "projection", "name", "d_in", "n_params", "target_sparsity"]


class Boom(Exception):
    pass


@pytest.fixture(scope="module")
def model():
    return random_model("llama-tiny", seed=0).eval()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def stats(model):
    windows = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(4))
    return collect_stats(model, windows, moments=True, progress=False, key="test-base")


def n_hooks(model):
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


class Halver(Sparsifier):
    """A minimal sparsifier: halves the input of every projection with sparsity > 0, counts tokens."""

    def __init__(self, model, allocation, protocol="all", record=True, fail_after=None):
        super().__init__(model, resolve_allocation(model, allocation), protocol, record)
        self.modules = {row["name"]: module for row, module in iter_projections(model)}
        self.fail_after, self.released = fail_after, 0

    def _hooks(self):
        pre = []
        for row in self.table.itertuples(index=False):
            if row.sparsity <= 0:
                continue
            if self.fail_after is not None and len(pre) == self.fail_after:
                raise Boom("cannot build this hook")
            counter = self._counter(row.name, lambda d=row.d_in: ZeroCount(d))

            def hook(module, args, counter=counter):
                if counter is not None:
                    counter.add(0, args[0].numel() // args[0].shape[-1])
                return (args[0] * 0.5,) + tuple(args[1:])

            pre.append((self.modules[row.name], hook))
        return pre, []

    def _release(self):
        self.released += 1


def test_protocols_are_shared():
    assert PROTOCOLS == TOPK_PROTOCOLS == ("all", "last_half")


def test_unknown_protocol_is_refused(model):
    with pytest.raises(AllocationError, match="Unknown protocol"):
        Halver(model, 0.5, protocol="first_half")
    with pytest.raises(AllocationError, match="Unknown protocol"):
        TopKSparsifier(model, 0.5, protocol="first_half")


def test_two_sparsifiers_on_one_model_are_refused(model, stats):
    first = Halver(model, 0.5)
    with first:
        installed = n_hooks(model)
        assert installed == 14
        for second in (TopKSparsifier(model, 0.3), ThresholdSparsifier(model, 0.3, stats), Halver(model, 0.3)):
            with pytest.raises(SparsifierStateError, match="Another Halver is already active"):
                with second:
                    pytest.fail("the body must not run")
            assert not second.active
        assert n_hooks(model) == installed  # the refused entries left the active hooks alone
        assert first.active
    assert n_hooks(model) == 0
    with TopKSparsifier(model, 0.3):  # the model is free again
        with pytest.raises(SparsifierStateError, match="Another TopKSparsifier"):
            Halver(model, 0.5).__enter__()
    assert n_hooks(model) == 0


def test_reentry_is_refused_and_reuse_after_exit_works(model, ids):
    sp = Halver(model, 0.5)
    with sp:
        with pytest.raises(SparsifierStateError, match="This Halver is already active"):
            sp.__enter__()
        assert n_hooks(model) == 14
        with torch.no_grad():
            model(ids)
    assert n_hooks(model) == 0 and not sp.active
    with sp, torch.no_grad():  # counters restart at each entry
        model(ids)
    assert (sp.realised()["tokens"] == ids.numel()).all()


def test_hooks_gone_and_model_free_after_an_exception(model, ids):
    sp = Halver(model, 0.5)
    with pytest.raises(Boom):
        with sp, torch.no_grad():
            model(ids)
            raise Boom
    assert n_hooks(model) == 0
    assert not hasattr(model, Sparsifier._ACTIVE_ATTR)
    assert sp.released == 1 and not sp.active
    with pytest.raises(Boom):
        with TopKSparsifier(model, 0.5):
            raise Boom
    assert n_hooks(model) == 0 and not hasattr(model, Sparsifier._ACTIVE_ATTR)


def test_failed_hook_building_leaves_nothing_behind(model):
    sp = Halver(model, 0.5, fail_after=3)
    with pytest.raises(Boom):
        with sp:
            pytest.fail("the body must not run")
    assert n_hooks(model) == 0
    assert not hasattr(model, Sparsifier._ACTIVE_ATTR)
    assert sp.released == 1 and not sp.active


def test_realised_columns(model, ids, stats):
    with Halver(model, {**{n: 0.5 for n in resolve_allocation(model, 0.0)["name"]}}) as halver, torch.no_grad():
        model(ids)
    real = halver.realised()
    assert list(real.columns) == IDENTITY + ["realised_sparsity", "tokens"]
    assert len(real) == 14 and (real["tokens"] == ids.numel()).all()

    with TopKSparsifier(model, 0.5) as topk, torch.no_grad():
        model(ids)
    real = topk.realised()
    assert list(real.columns) == IDENTITY + ["k", "realised_sparsity", "tokens"]
    assert real["realised_sparsity"].between(0.5 - 0.05, 1.0).all()
    assert (real["tokens"] == ids.numel()).all()

    spread = ["realised_sparsity", "realised_std", "realised_p05", "realised_p95", "tokens"]
    with ThresholdSparsifier(model, 0.5, stats) as teal, torch.no_grad():
        model(ids)
    assert list(teal.realised().columns) == IDENTITY + ["threshold"] + spread
    alloc = {n: (0.5 if n.endswith("down_proj") else 0.0) for n in resolve_allocation(model, 0.0)["name"]}
    with CatsSparsifier(model, alloc, stats) as cats, torch.no_grad():
        model(ids)
    real = cats.realised()
    assert list(real.columns) == IDENTITY + ["threshold"] + spread
    assert (real.loc[real["projection"].isin(["up", "down"]), "tokens"] == ids.numel()).all()
    assert (real.loc[~real["projection"].isin(["up", "down"]), "tokens"] == 0).all()
    assert isinstance(real, pd.DataFrame)


def test_topk_realised_before_any_run_is_nan_for_hooked_and_zero_for_dense(model):
    alloc = {n: (0.0 if i % 2 else 0.5) for i, n in enumerate(resolve_allocation(model, 0.0)["name"])}
    real = TopKSparsifier(model, alloc).realised()
    hooked = real["target_sparsity"] > 0
    assert real.loc[hooked, "realised_sparsity"].isna().all()
    assert (real.loc[~hooked, "realised_sparsity"] == 0.0).all()
    assert (real["tokens"] == 0).all()


def test_rotated_topk_is_a_sparsifier_and_restores_weights(model, ids, stats):
    rotations = rotations_from_stats(stats, range(len(decoder_layers(model))), progress=False)
    weights = {n: m.weight.detach().clone() for n, m in ((r["name"], m) for r, m in iter_projections(model))}
    sp = RotatedTopK(model, 0.5, rotations)
    assert isinstance(sp, Sparsifier)
    with pytest.raises(Boom):
        with sp, torch.no_grad():
            with pytest.raises(SparsifierStateError):
                TopKSparsifier(model, 0.3).__enter__()
            model(ids)
            raise Boom
    assert n_hooks(model) == 0 and not hasattr(model, Sparsifier._ACTIVE_ATTR)
    for row, module in iter_projections(model):
        assert torch.equal(module.weight, weights[row["name"]])
    assert (sp.realised()["tokens"] == ids.numel()).all()
