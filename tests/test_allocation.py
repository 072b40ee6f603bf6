"""Alpha -> sparsity allocation: exact targets, AlphaPruning's formula, clipping, presets, files, CLI."""
import numpy as np
import pandas as pd
import pytest

from acttail_lab.allocation import (
    STRATEGY_PRESETS,
    StrategySpec,
    acttail_ratios,
    allocate,
    check_matches,
    load_allocation,
    load_alpha_table,
    parse_strategies,
    parse_strategy,
    save_allocation,
    solve_scale,
    summary,
    weighted_mean,
    with_alphas,
)
from acttail_lab.allocation.strategies import get_strategy
from acttail_lab.cli import main as cli_main
from acttail_lab.core.errors import AllocationError
from acttail_lab.core.models import PROJECTIONS, projection_table
from acttail_lab.core.reference import (
    PUBLISHED_ALPHAS_DIR,
    TEAL_LLAMA2_7B_50,
    published_alphas,
    shape_table,
)

TARGETS = [round(0.1 * i, 1) for i in range(1, 10)]
LLAMA2_7B_NPY = PUBLISHED_ALPHAS_DIR / "llama2-7b-hf.alpha_peak.npy"


def random_table(n_layers=6, seed=0):
    """Projection table with uneven sizes (GQA-like k/v) and lognormal alphas."""
    rng = np.random.default_rng(seed)
    dims = dict(q=(64, 64), k=(16, 64), v=(16, 64), o=(64, 64), gate=(160, 64), up=(160, 64), down=(64, 160))
    rows = [dict(layer=layer, projection=kind, n_params=dims[kind][0] * dims[kind][1],
                 alpha=float(np.exp(rng.normal(1.1, 0.35))))
            for layer in range(n_layers) for kind in PROJECTIONS]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def llama():
    return published_alphas("llama2-7b")


def alphapruning_formula(alpha, n_params, target, eps):
    """AlphaPruning's ww_sparsity, written independently (no clipping)."""
    r = (alpha - alpha.min()) / (alpha.max() - alpha.min()) * 2 * eps + (1 - eps)
    return r * target * n_params.sum() / np.sum(n_params * r)


# --------------------------------------------------------------------------- exact targets
RATIO_PRESETS = [k for k, v in STRATEGY_PRESETS.items() if not get_strategy(v.strategy).needs_cost]


@pytest.mark.parametrize("label", RATIO_PRESETS)  # measured (optimal, hybrid, teal-greedy): elsewhere
def test_every_preset_meets_every_target_exactly(label, llama):
    for table in (random_table(), llama):
        if STRATEGY_PRESETS[label].resolved.get("xmin"):  # acttail-ks: its own rule (the published alphas are peak)
            table = table.drop(columns="xmin_rule", errors="ignore")
            table.attrs = {}
        for target in TARGETS:
            alloc = allocate(table, label, target)
            kinds = STRATEGY_PRESETS[label].kinds  # FFN-only / CATS presets: the mean over their kinds
            part = alloc if kinds is None else alloc[alloc.projection.isin(kinds)]
            mean = weighted_mean(part.sparsity, part.n_params)
            assert abs(mean - target) <= 1e-9, (label, target, mean)
            assert kinds is None or (alloc.loc[~alloc.projection.isin(kinds), "sparsity"] == 0).all()
            assert alloc.sparsity.min() >= 0 and alloc.sparsity.max() <= 0.99 + 1e-15
            assert (alloc.label == label).all() and (alloc.target == target).all()


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("granularity", ["projection", "block"])
def test_acttail_exact_over_eps(eps, granularity, llama):
    for table in (random_table(seed=3), llama):
        for target in TARGETS:
            alloc = allocate(table, "acttail", target, epsilon=eps, granularity=granularity)
            assert abs(weighted_mean(alloc.sparsity, alloc.n_params) - target) <= 1e-9


def test_unclipped_acttail_is_alphapruning_formula(llama):
    alloc = allocate(llama, "acttail", 0.5, epsilon=0.3)
    expected = alphapruning_formula(llama.alpha.to_numpy(), llama.n_params.to_numpy(float), 0.5, 0.3)
    np.testing.assert_allclose(alloc.sparsity, expected, rtol=0, atol=1e-12)
    assert alloc.sparsity.max() == pytest.approx(0.6904741884, abs=1e-9)  # layer-wise max, far from the cap
    assert alloc.ratio.min() == pytest.approx(0.7) and alloc.ratio.max() == pytest.approx(1.3)


def test_block_uses_plain_mean_alpha_per_layer(llama):
    alloc = allocate(llama, "acttail", 0.5, granularity="block")
    assert (alloc.groupby("layer").sparsity.nunique() == 1).all()
    block_alpha = llama.groupby("layer").alpha.transform("mean").to_numpy()
    expected = alphapruning_formula(block_alpha, llama.n_params.to_numpy(float), 0.5, 0.3)
    np.testing.assert_allclose(alloc.sparsity, expected, atol=1e-12)
    per_layer = alloc.groupby("layer").sparsity.first()
    assert per_layer.idxmin() == 0  # layer 0 has the lowest mean alpha (2.14)


def test_monotone_in_alpha_without_clipping():
    table = random_table(seed=5)
    up = allocate(table, "acttail", 0.3)
    down = allocate(table, "acttail-rev", 0.3)
    assert up.sparsity.max() < 0.99 and down.sparsity.max() < 0.99
    order = np.argsort(table.alpha.to_numpy())
    assert np.all(np.diff(up.sparsity.to_numpy()[order]) > 0)
    assert np.all(np.diff(down.sparsity.to_numpy()[order]) < 0)
    for mapping in ("rank", "power", "log"):
        s = allocate(table, "acttail", 0.3, mapping=mapping).sparsity.to_numpy()[order]
        assert np.all(np.diff(s) > 0), mapping


def test_rank_mapping_spaces_ratios_evenly():
    table = random_table(n_layers=2, seed=1)
    ratios = np.sort(acttail_ratios(table, epsilon=0.3, mapping="rank"))
    np.testing.assert_allclose(ratios, np.linspace(0.7, 1.3, len(table)), atol=1e-12)


def test_eps_zero_equals_uniform(llama):
    a = allocate(llama, "acttail", 0.6, epsilon=0.0)
    u = allocate(llama, "uniform", 0.6)
    np.testing.assert_allclose(a.sparsity, 0.6, atol=1e-12)
    np.testing.assert_allclose(u.sparsity, 0.6, atol=1e-12)


# --------------------------------------------------------------------------- clipping
def test_llama2_7b_at_80_percent_clips_and_resolves(llama):
    unclipped = alphapruning_formula(llama.alpha.to_numpy(), llama.n_params.to_numpy(float), 0.8, 0.3)
    assert (unclipped > 1).sum() == 5  # docs/method.md, "Alpha to sparsity": five above 100%
    alloc = allocate(llama, "acttail", 0.8)
    s = alloc.sparsity.to_numpy()
    assert s.max() == pytest.approx(0.99, abs=1e-15)
    assert abs(weighted_mean(s, alloc.n_params) - 0.8) <= 1e-9
    capped = np.isclose(s, 0.99, rtol=0, atol=1e-12)
    assert capped.sum() == 6
    scale = s[~capped] / alloc.ratio.to_numpy()[~capped]  # the free ones share one scale factor,
    assert np.ptp(scale) < 1e-12
    assert scale[0] > (unclipped / alloc.ratio.to_numpy())[0]  # larger than before: clipped mass moved there


def test_solve_scale_by_hand():
    s = solve_scale([1.0, 1.0, 4.0], [1, 1, 1], target=0.5, s_max=0.9)
    np.testing.assert_allclose(s, [0.3, 0.3, 0.9], atol=1e-15)
    s = solve_scale([1.0, 2.0], [3, 1], target=0.4, s_max=1.0)  # 3c + 2c = 1.6 -> c = 0.32
    np.testing.assert_allclose(s, [0.32, 0.64], atol=1e-15)
    np.testing.assert_allclose(solve_scale([0.0, 1.0], [1, 1], 0.45, 0.9), [0.0, 0.9], atol=1e-15)
    np.testing.assert_allclose(solve_scale([1.0, 3.0], [1, 1], 0.0, 0.9), [0.0, 0.0])


def test_solve_scale_random_exact():
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        ratios = rng.uniform(0, 3, n) * (rng.uniform(size=n) > 0.1)
        if not ratios.any():
            continue
        n_params = rng.integers(1, 10_000, n).astype(float)
        s_max = float(rng.uniform(0.5, 1.0))
        limit = s_max * n_params[ratios > 0].sum() / n_params.sum()
        target = float(rng.uniform(0, min(limit, 0.999)))
        s = solve_scale(ratios, n_params, target, s_max)
        assert abs(weighted_mean(s, n_params) - target) <= 1e-9
        assert s.max() <= s_max and s.min() >= 0


def test_unreachable_targets_name_the_limit():
    with pytest.raises(AllocationError, match=r"at most 0\.450000"):
        solve_scale([0.0, 1.0], [1, 1], 0.5, 0.9)
    with pytest.raises(AllocationError, match="s_max"):
        allocate(random_table(), "acttail", 0.95, s_max=0.9)


# --------------------------------------------------------------------------- shuffled and kind
def test_shuffled_is_a_permutation_with_exact_target(llama):
    base = allocate(llama, "acttail", 0.5)
    shuf = allocate(llama, "shuffled", 0.5)
    np.testing.assert_allclose(np.sort(shuf.ratio), np.sort(base.ratio), atol=1e-15)
    assert not np.allclose(shuf.ratio, base.ratio)
    assert abs(weighted_mean(shuf.sparsity, shuf.n_params) - 0.5) <= 1e-9
    again = allocate(llama, "shuffled", 0.5)
    other = allocate(llama, "shuffled", 0.5, seed=1)
    np.testing.assert_array_equal(again.sparsity, shuf.sparsity)
    assert not np.allclose(other.sparsity, shuf.sparsity)
    assert (shuf.seed == 0).all() and (other.seed == 1).all()


def test_shuffled_block_permutes_whole_layers(llama):
    base = allocate(llama, "acttail-block", 0.5)
    shuf = allocate(llama, "shuffled", 0.5, granularity="block")
    assert (shuf.groupby("layer").sparsity.nunique() == 1).all()
    np.testing.assert_allclose(np.sort(shuf.groupby("layer").ratio.first()),
                               np.sort(base.groupby("layer").ratio.first()), atol=1e-15)


def test_kind_reproduces_teal_at_its_own_mean(llama):
    teal_mean = weighted_mean(llama.projection.map(TEAL_LLAMA2_7B_50), llama.n_params)
    alloc = allocate(llama, "teal-kind", teal_mean)
    by_kind = summary(alloc).set_index("projection").sparsity
    for kind, value in TEAL_LLAMA2_7B_50.items():
        assert by_kind[kind] == pytest.approx(value, abs=1e-9)
    scaled = allocate(llama, "kind", 0.4).set_index("projection").sparsity.groupby(level=0).first()
    assert scaled["up"] == pytest.approx(0.405 * 0.4 / teal_mean, abs=1e-9)


def test_kind_custom_budgets():
    table = random_table()
    budgets = {k: 0.5 for k in PROJECTIONS} | {"down": 0.8}
    alloc = allocate(table, "kind", 0.5, budgets=budgets)
    first = alloc.groupby("projection").sparsity.first()
    assert first["down"] / first["q"] == pytest.approx(1.6)
    spec = parse_strategy("kind[q=1;k=1;v=1;o=1;gate=1;up=1;down=2]")
    assert dict(spec.options["budgets"]) == {**{k: 1 for k in PROJECTIONS}, "down": 2}
    with pytest.raises(AllocationError, match=r"\['down'\]"):
        allocate(table, "kind", 0.5, budgets={k: 0.5 for k in PROJECTIONS if k != "down"})
    with pytest.raises(AllocationError, match="unknown projection"):
        allocate(table, "kind", 0.5, budgets={"qkv": 0.5})


# --------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("target", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_bad_target(target):
    with pytest.raises(AllocationError, match="target"):
        allocate(random_table(), "uniform", target)


@pytest.mark.parametrize("options, pattern", [
    (dict(epsilon=1.0), r"epsilon=1.0 is outside \[0, 1\)"),
    (dict(epsilon=-0.1), "epsilon"),
    (dict(s_max=0.0), "s_max"),
    (dict(s_max=1.0), "s_max"),
    (dict(s_max=1.5), "s_max"),
    (dict(granularity="head"), "granularity"),
    (dict(direction="up"), "alpha_up"),
    (dict(mapping="exp"), "linear"),
    (dict(power=3.0), "mapping='power'"),
    (dict(eps=0.2), "Did you mean 'epsilon'"),
    (dict(seed=1), "Unknown option 'seed'"),
])
def test_bad_options(options, pattern):
    with pytest.raises(AllocationError, match=pattern):
        allocate(random_table(), "acttail", 0.5, **options)


def test_bad_tables():
    table = random_table()
    with pytest.raises(AllocationError, match="Unknown strategy 'greedy'.*uniform, acttail, shuffled, kind"):
        allocate(table, "greedy", 0.5)
    with pytest.raises(AllocationError, match=r"lacks column\(s\) \['alpha'\]"):
        allocate(table.drop(columns="alpha"), "acttail", 0.5)
    allocate(table.drop(columns="alpha"), "uniform", 0.5)  # uniform does not need alphas
    with pytest.raises(AllocationError, match="n_params"):
        allocate(table.drop(columns="n_params"), "uniform", 0.5)
    for bad in (np.nan, np.inf):
        broken = table.copy()
        broken.loc[3, "alpha"] = bad
        with pytest.raises(AllocationError, match="1 alpha value"):
            allocate(broken, "acttail", 0.5)
    with pytest.raises(AllocationError, match="appears twice"):
        allocate(pd.concat([table, table.iloc[:1]]), "uniform", 0.5)
    with pytest.raises(AllocationError, match="empty"):
        allocate(table.iloc[:0], "uniform", 0.5)
    negative = table.assign(alpha=table.alpha - 10)
    with pytest.raises(AllocationError, match="alpha > 0"):
        allocate(negative, "acttail", 0.5, mapping="log")


# --------------------------------------------------------------------------- presets and parsing
def test_presets_and_parse():
    assert {"uniform", "acttail", "acttail-block", "acttail-rev", "acttail-eps0.1", "acttail-eps0.5",
            "acttail-rank", "acttail-power", "shuffled", "teal-kind"} <= set(STRATEGY_PRESETS)
    spec = parse_strategy("acttail[eps=0.2;granularity=block;direction=alpha_down]")
    assert spec == StrategySpec("acttail[epsilon=0.2;granularity=block;direction=alpha_down]", "acttail",
                                {"epsilon": 0.3, "granularity": "block", "direction": "alpha_down",
                                 "mapping": "linear"} | {"epsilon": 0.2})
    assert parse_strategy("acttail-block[eps=0.5]").options["granularity"] == "block"
    assert parse_strategy("acttail-eps0.1").options["epsilon"] == 0.1
    with pytest.raises(TypeError):
        spec.options["epsilon"] = 0.9  # specs are immutable
    specs = parse_strategies("uniform, acttail[eps=0.2;granularity=block],teal-kind")
    assert [s.label for s in specs] == ["uniform", "acttail[epsilon=0.2;granularity=block]", "teal-kind"]
    with pytest.raises(AllocationError, match="repeat"):
        parse_strategies("uniform,uniform")
    with pytest.raises(AllocationError, match="Presets: uniform"):
        parse_strategy("alpha-magic")
    with pytest.raises(AllocationError, match="key=value"):
        parse_strategy("acttail[eps]")
    with pytest.raises(AllocationError, match="epsilon"):
        parse_strategy("acttail[eps=2]")


def test_allocate_accepts_specs_and_labels(llama):
    spec = parse_strategy("acttail[eps=0.1]")
    a = allocate(llama, spec, 0.5)
    b = allocate(llama, "acttail-eps0.1", 0.5)
    np.testing.assert_array_equal(a.sparsity, b.sparsity)
    assert a.label[0] == "acttail[epsilon=0.1]" and b.label[0] == "acttail-eps0.1"
    c = allocate(llama, "acttail-block", 0.5, epsilon=0.2)
    assert c.label[0] == "acttail-block[epsilon=0.2]" and c.granularity[0] == "block" and c.epsilon[0] == 0.2
    assert allocate(llama, "acttail", 0.5, label="mine").label[0] == "mine"


def test_output_columns_describe_the_run(llama):
    alloc = allocate(llama, "acttail-power", 0.5)
    assert list(alloc.columns) == ["layer", "projection", "name", "d_out", "d_in", "n_params", "alpha",
                                   "xmin_rule", "ratio", "sparsity", "label", "strategy", "target", "epsilon",
                                   "granularity", "direction", "mapping", "power", "s_max", "estimator"]
    assert alloc.xmin_rule[0] == "xmin_peak" and alloc.power[0] == 2.0 and alloc.s_max[0] == 0.99
    assert "power" not in allocate(llama, "acttail", 0.5).columns
    assert list(allocate(llama.drop(columns="alpha"), "uniform", 0.5).columns[-3:]) == ["label", "strategy", "target"]


# --------------------------------------------------------------------------- files, checks, summary
def test_csv_round_trip(tmp_path, llama):
    alloc = allocate(llama, "teal-kind", 0.5)
    path = save_allocation(alloc, tmp_path / "sub" / "alloc.csv")
    back = load_allocation(path)
    pd.testing.assert_frame_equal(back, alloc, check_dtype=False, check_exact=False, rtol=1e-15)
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary files left behind


def test_load_allocation_rejects_bad_files(tmp_path):
    with pytest.raises(AllocationError, match="No allocation file"):
        load_allocation(tmp_path / "missing.csv")
    random_table().to_csv(tmp_path / "no_sparsity.csv", index=False)
    with pytest.raises(AllocationError, match=r"\['sparsity'\]"):
        load_allocation(tmp_path / "no_sparsity.csv")
    random_table().assign(sparsity=1.0).to_csv(tmp_path / "full.csv", index=False)
    with pytest.raises(AllocationError, match="outside"):
        load_allocation(tmp_path / "full.csv")
    with pytest.raises(AllocationError, match="outside"):
        save_allocation(random_table().assign(sparsity=np.nan), tmp_path / "nan.csv")
    assert not (tmp_path / "nan.csv").exists()


def test_check_matches(tiny_model):
    table = projection_table(tiny_model)
    table["alpha"] = np.linspace(2, 5, len(table))
    alloc = allocate(table, "acttail", 0.5)
    check_matches(alloc, table)
    with pytest.raises(AllocationError, match="14 projections .* 224"):
        check_matches(alloc, shape_table("llama2-7b"))
    other = table.copy()
    other.loc[5, "n_params"] += 1
    with pytest.raises(AllocationError, match="n_params differs at row 5"):
        check_matches(alloc, other)
    renamed = table.assign(name=table.name.str.replace("model.", "base.", regex=False))
    with pytest.raises(AllocationError, match="name differs at row 0"):
        check_matches(alloc, renamed)
    with pytest.raises(AllocationError, match="14 alphas"):
        with_alphas(shape_table("llama2-7b"), table.alpha)


def test_summary_is_parameter_weighted():
    table = random_table(n_layers=3)
    alloc = allocate(table, "acttail", 0.6)
    by_kind = summary(alloc)
    assert list(by_kind.projection) == list(PROJECTIONS)
    assert list(by_kind.columns[:4]) == ["label", "target", "projection", "sparsity"]
    gate = alloc[alloc.projection == "gate"]
    assert by_kind.set_index("projection").sparsity["gate"] == pytest.approx(gate.sparsity.mean())
    by_layer = summary(alloc, by="layer").set_index("layer")
    layer0 = alloc[alloc.layer == 0]
    assert by_layer.sparsity[0] == pytest.approx(np.average(layer0.sparsity, weights=layer0.n_params))
    assert np.average(by_layer.sparsity, weights=by_layer.n_params) == pytest.approx(0.6, abs=1e-12)
    both = summary(pd.concat([alloc, allocate(table, "uniform", 0.6)]))
    assert len(both) == 14 and set(both.label) == {"acttail", "uniform"}


def test_load_alpha_table(tmp_path, llama):
    table = load_alpha_table(LLAMA2_7B_NPY)  # shapes read from the AlphaPruning file name
    pd.testing.assert_frame_equal(table, llama)
    with pytest.raises(AllocationError, match="224 alphas .* 280 projections"):
        load_alpha_table(LLAMA2_7B_NPY, "llama2-13b")
    np.save(tmp_path / "mine.npy", llama.alpha.to_numpy())
    with pytest.raises(AllocationError, match="needs shapes"):
        load_alpha_table(tmp_path / "mine.npy")
    shape_table("llama2-7b").to_csv(tmp_path / "shapes.csv", index=False)
    assert load_alpha_table(tmp_path / "mine.npy", tmp_path / "shapes.csv").alpha.equals(llama.alpha)


# --------------------------------------------------------------------------- CLI
def test_cli_allocate_writes_the_file(tmp_path, capsys):
    out = tmp_path / "alloc.csv"
    code = cli_main(["allocate", "--alphas", str(LLAMA2_7B_NPY), "--shapes", "llama2-7b", "--strategy",
                     "acttail", "--target", "0.8", "--epsilon", "0.3", "--out", str(out)])
    assert code == 0
    alloc = load_allocation(out)
    assert len(alloc) == 224 and abs(weighted_mean(alloc.sparsity, alloc.n_params) - 0.8) <= 1e-9
    assert alloc.sparsity.max() == pytest.approx(0.99)
    printed = capsys.readouterr().out
    assert "weighted mean sparsity 0.800000" in printed and "down" in printed
    # a spectra-style CSV in, another strategy with options in brackets
    code = cli_main(["allocate", "--alphas", str(out), "--strategy", "acttail[eps=0.2]", "--granularity", "block",
                     "--target", "0.5", "--out", str(tmp_path / "b.csv")])
    block = load_allocation(tmp_path / "b.csv")
    assert code == 0 and block.label[0] == "acttail[epsilon=0.2;granularity=block]"
    assert (block.groupby("layer").sparsity.nunique() == 1).all()


def test_cli_reports_errors_cleanly(tmp_path, capsys):
    code = cli_main(["allocate", "--alphas", str(LLAMA2_7B_NPY), "--target", "0.5", "--s-max", "1.2",
                     "--out", str(tmp_path / "x.csv")])
    assert code == 2 and "s_max=1.2" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
