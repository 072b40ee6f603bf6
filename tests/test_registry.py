"""Strategies and methods register themselves: a new one is usable without editing any other module."""
import numpy as np
import pytest

from acttail_lab.allocation import allocate, parse_strategy
from acttail_lab.allocation.registry import STRATEGIES, RatioStrategy, register_strategy
from acttail_lab.core.errors import AllocationError
from acttail_lab.core.models import projection_table, random_model
from acttail_lab.sparsify.methods import METHODS, make_sparsifier, resolve_spec
from acttail_lab.sparsify.registry import register_method
from acttail_lab.sparsify.topk import TopKSparsifier


@pytest.fixture(scope="module")
def model():
    return random_model("llama-tiny", seed=0).eval()


@pytest.fixture
def dummy_strategy():
    def down_heavy(table, weight=2.0):
        return np.where(table["projection"] == "down", weight, 1.0)

    register_strategy("down-heavy", defaults={"weight": 2.0, "s_max": 0.99},
                      validators={"weight": float})(down_heavy)
    yield "down-heavy"
    STRATEGIES.unregister("down-heavy")


@pytest.fixture
def dummy_method():
    built = []

    @register_method("dummy-topk", needs=None)
    def factory(model, allocation, *, protocol, stats, progress):
        built.append(protocol)
        return TopKSparsifier(model, allocation, protocol=protocol)

    yield built
    METHODS.unregister("dummy-topk")


def test_a_registered_strategy_works_through_allocate(model, dummy_strategy):
    table = projection_table(model)
    alloc = allocate(table, "down-heavy[weight=3]", 0.5)
    assert alloc["label"].iloc[0] == "down-heavy[weight=3]" and set(alloc["strategy"]) == {"down-heavy"}
    w = alloc["n_params"]
    assert np.dot(alloc["sparsity"], w) / w.sum() == pytest.approx(0.5, abs=1e-9)
    down = alloc["projection"] == "down"
    assert alloc.loc[down, "ratio"].unique().tolist() == [3.0] and alloc.loc[~down, "ratio"].unique().tolist() == [1.0]
    assert parse_strategy("down-heavy").resolved == {"weight": 2.0, "s_max": 0.99}
    with pytest.raises(AllocationError, match="Unknown option 'wieght'.*Did you mean 'weight'"):
        parse_strategy("down-heavy[wieght=3]")


def test_a_registered_entry_object_works_too(model):
    register_strategy(RatioStrategy("flat", ratios=lambda table: np.ones(len(table))))
    try:
        alloc = allocate(projection_table(model), "flat", 0.4)
        assert np.allclose(alloc["sparsity"], 0.4)
    finally:
        STRATEGIES.unregister("flat")


def test_a_registered_method_works_through_make_sparsifier(model, dummy_method):
    spec = resolve_spec("uniform[method=dummy-topk]")
    alloc = allocate(projection_table(model), spec, 0.5)
    assert set(alloc["method"]) == {"dummy-topk"}
    sparsifier = make_sparsifier(model, alloc, spec.method, protocol="last_half")
    assert isinstance(sparsifier, TopKSparsifier) and dummy_method == ["last_half"]


def test_unknown_names_list_the_registered_ones(model):
    with pytest.raises(AllocationError, match="Unknown strategy 'nope'.*uniform, acttail.*teal-greedy"):
        allocate(projection_table(model), "nope", 0.5)
    with pytest.raises(AllocationError, match="Unknown method 'nope'. Registered methods: topk, rotated, threshold, cats"):
        make_sparsifier(model, None, "nope")
    with pytest.raises(AllocationError, match="Registered methods: topk, rotated"):
        resolve_spec("uniform[method=nope]")


def test_duplicate_registration_is_an_error(dummy_strategy, dummy_method):
    with pytest.raises(AllocationError, match="already registered"):
        register_strategy("uniform")(lambda table: np.ones(len(table)))
    with pytest.raises(AllocationError, match="already registered"):
        register_strategy(dummy_strategy)(lambda table: np.ones(len(table)))
    with pytest.raises(AllocationError, match="already registered"):
        register_method("topk")(lambda *a, **k: None)
    assert list(STRATEGIES)[:7] == ["uniform", "acttail", "shuffled", "kind", "surrogate-optimal", "hybrid", "teal-greedy"]
    assert list(METHODS)[:4] == ["topk", "rotated", "threshold", "cats"]


def test_every_strategy_kind_says_what_it_reads():
    assert STRATEGIES["uniform"].inputs({}) == {}
    assert STRATEGIES["surrogate-optimal"].inputs(parse_strategy("surrogate-optimal").resolved) == {"cost": {}}
    assert STRATEGIES["teal-greedy"].inputs(parse_strategy("teal-greedy[s_max=0.9]").resolved) == {
        "greedy_path": {"s_max": 0.9}}
    assert STRATEGIES["hybrid"].needs_alpha and not STRATEGIES["surrogate-optimal"].needs_alpha
