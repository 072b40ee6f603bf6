"""core.cache and core.result_cache: atomic writes, the cache root, content hashes, the one result cache."""
import io
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from acttail_lab.core import result_cache
from acttail_lab.core.cache import (
    atomic_path,
    atomic_write_text,
    cache_dir,
    hash_bytes,
    stable_hash,
)
from acttail_lab.core.result_cache import FORMATS, ResultCache


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path / "root"))
    return tmp_path / "root"


SAMPLES = {
    "json": {"perplexity": 12.5, "nll": 2.5257286443082556, "tokens": 31, "context": {"model": "m", "w": [1, 2]}},
    "csv": pd.DataFrame({"name": ["a.q_proj", "b.down_proj"], "sparsity": [0.1, 0.85],
                         "rel_error": [0.1234567890123456789, 1e-300], "n": [3, 4]}),
    "npz": {"layer.0": np.linspace(0, 1, 7), "layer.1": np.arange(5, dtype=np.float32)},
    "pt": {"key": "k", "tokens": 64, "sites": {"0|o": {"d": 4, "counts": torch.arange(6), "zeros": 1}}},
}


def _same(fmt, got, want):
    if fmt == "csv":
        # the same numbers read_csv gives for a plain to_csv file (what the caches returned before)
        pd.testing.assert_frame_equal(got, pd.read_csv(io.StringIO(want.to_csv(index=False))), check_exact=True)
    elif fmt == "npz":
        assert list(got) == list(want)
        assert all(np.array_equal(got[k], want[k]) and got[k].dtype == want[k].dtype for k in want)
    elif fmt == "pt":
        assert got["key"] == "k" and got["tokens"] == 64
        assert torch.equal(got["sites"]["0|o"]["counts"], torch.arange(6))
    else:
        assert got == want


# --------------------------------------------------------------------------- core.cache
def test_atomic_path_leaves_nothing_when_the_body_raises(tmp_path):
    target = tmp_path / "sub" / "result.csv"
    with pytest.raises(RuntimeError, match="interrupted"), atomic_path(target) as tmp:
        tmp.write_text("half a file")
        raise RuntimeError("interrupted")
    assert not target.exists()
    assert list((tmp_path / "sub").iterdir()) == []  # no temporary file left either


def test_atomic_path_keeps_the_old_file_when_the_body_raises(tmp_path):
    target = tmp_path / "result.txt"
    atomic_write_text(target, "old")
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("new but unfinished")
        raise ValueError
    assert target.read_text() == "old"
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["result.txt"]


def test_cache_root_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path / "elsewhere"))
    folder = cache_dir("eval", "sub")
    assert folder == tmp_path / "elsewhere" / "eval" / "sub" and folder.is_dir()
    store = ResultCache("eval")
    assert store.path("abc") == tmp_path / "elsewhere" / "eval" / f"abc.{store.stamp}.json"
    monkeypatch.delenv("ACTTAIL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir("x") == tmp_path / "home" / ".cache" / "acttail-lab" / "x"


def test_stable_hash_ignores_dict_order_and_follows_content():
    a = stable_hash({"model": "m", "tokens": [1, 2, 3], "opts": {"x": 1, "y": 2}})
    b = stable_hash({"opts": {"y": 2, "x": 1}, "tokens": [1, 2, 3], "model": "m"})
    assert a == b and len(a) == 16 and int(a, 16) >= 0
    assert stable_hash({"model": "m", "tokens": [1, 2, 4], "opts": {"x": 1, "y": 2}}) != a
    assert stable_hash({"model": "m", "tokens": [3, 2, 1], "opts": {"x": 1, "y": 2}}) != a  # lists keep order
    assert stable_hash({"v": 1}) != stable_hash({"v": 2}) and stable_hash({"v": 1}) != stable_hash({"w": 1})
    assert len(stable_hash("x", 32)) == 32 and stable_hash("x", 32).startswith(stable_hash("x", 32)[:16])
    assert hash_bytes(b"abc") == hash_bytes(b"abc") != hash_bytes(b"abd")


# --------------------------------------------------------------------------- ResultCache
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(root, fmt):
    store = ResultCache("kind", version=3, fmt=fmt)
    assert store.load("k1") is None  # missing
    path = store.save("k1", SAMPLES[fmt])
    assert path == root / "kind" / f"k1.{store.stamp}.{fmt}" and path.exists()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _same(fmt, store.load("k1"), SAMPLES[fmt])
        _same(fmt, ResultCache("kind", version=3, fmt=fmt).load("k1"), SAMPLES[fmt])  # a fresh instance too


@pytest.mark.parametrize("fmt", FORMATS)
def test_other_version_is_ignored_silently(root, fmt):
    ResultCache("kind", version=1, fmt=fmt).save("k", SAMPLES[fmt])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ResultCache("kind", version=2, fmt=fmt).load("k") is None
        assert ResultCache("kind", version="1", fmt=fmt).load("k") is None
        assert ResultCache("kind", version=1, fmt=fmt).load("k") is not None


def test_files_written_before_the_helper_are_ignored_silently(root):
    folder = cache_dir("kind")
    (folder / "old.json").write_text(json.dumps({"key": "old", "perplexity": 1.0}))
    SAMPLES["csv"].to_csv(folder / "old.csv", index=False)
    with open(folder / "old.npz", "wb") as fh:
        np.savez(fh, a=np.ones(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fmt in ("json", "csv", "npz"):
            assert ResultCache("kind", fmt=fmt).load("old") is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_or_corrupt_file_returns_none_and_warns_once(root, fmt):
    store = ResultCache("kind", version=1, fmt=fmt)
    path = store.save("k", SAMPLES[fmt])
    blob = path.read_bytes()
    for bad in (blob[: len(blob) // 2], b"\x00garbage\xff" * 3):
        path.write_bytes(bad)
        with pytest.warns(UserWarning, match="Ignoring unreadable or inconsistent cache file .*recomputing"):
            assert store.load("k") is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert store.load("k") is None  # the same bad file: warned once only
    store.save("k", SAMPLES[fmt])  # recomputed and replaced
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _same(fmt, store.load("k"), SAMPLES[fmt])


def test_csv_missing_rows_is_not_trusted(root):
    store = ResultCache("kind", fmt="csv")
    path = store.save("k", SAMPLES["csv"])
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2] + lines[3:]))  # one data row lost, end line kept
    with pytest.warns(UserWarning, match="2 rows|1 rows"):
        assert store.load("k") is None


def test_half_written_temporary_file_is_never_read(root):
    store = ResultCache("kind", fmt="json")
    (cache_dir("kind") / ".k.json.abc123.tmp").write_text('{"perplexity": 1')
    assert store.load("k") is None


def test_a_file_under_another_key_is_not_trusted(root):
    store = ResultCache("kind", fmt="json")
    path = store.save("k1", {"x": 1})
    path.rename(store.path("k2"))
    with pytest.warns(UserWarning, match="holds key 'k1'"):
        assert store.load("k2") is None


def test_check_rejects_inconsistent_entries(root):
    store = ResultCache("kind", fmt="json")
    store.save("k", {"perplexity": 2.0, "nll": 0.0})
    with pytest.warns(UserWarning, match="consistency check"):
        assert store.load("k", check=lambda d: d["perplexity"] == np.exp(d["nll"])) is None
    store.save("k", {"perplexity": 1.0})
    with pytest.warns(UserWarning, match="KeyError"):
        assert store.load("k", check=lambda d: d["nll"] > 0) is None  # a check that raises counts as failed
    assert store.load("k", check=lambda d: d["perplexity"] == 1.0) == {"perplexity": 1.0}


def test_disabled_cache_reads_and_writes_nothing(root):
    ResultCache("kind", fmt="json").save("k", {"x": 1})
    off = ResultCache("other", fmt="json", enabled=False)
    assert off.save("k", {"x": 1}) is None
    assert off.load("k") is None
    assert not (root / "other").exists()
    assert ResultCache("kind", fmt="json", enabled=False).load("k") is None  # even when the file is there


def test_bad_arguments_are_refused(root):
    with pytest.raises(ValueError, match="Unknown cache format"):
        ResultCache("kind", fmt="xml")
    with pytest.raises(TypeError):
        ResultCache("kind", fmt="json").save("k", [1, 2])
    with pytest.raises(TypeError):
        ResultCache("kind", fmt="csv").save("k", {"a": 1})
    with pytest.raises(TypeError):
        ResultCache("kind", fmt="json").save("k", {result_cache.META: 1})
    assert not list((root / "kind").iterdir())  # a refused save leaves nothing behind


# --------------------------------------------------------------------------- stamps: environment and code version
def _as_if_made_elsewhere(path, fmt="json", **env):
    """Rewrite a saved JSON entry as if another environment had made it, under that environment's stamp."""
    data = json.loads(path.read_text())
    data["_cache"]["env"] = {**data["_cache"]["env"], **env}
    other = path.with_name(path.name.replace(path.name.split(".")[1], "0123456789ab"))
    other.write_text(json.dumps(data))
    path.unlink()
    return other


def test_a_result_made_in_another_environment_is_recomputed_with_a_warning(root):
    from acttail_lab.core.result_cache import cache_summary, reset_cache_summary

    reset_cache_summary()
    store = ResultCache("eval", fmt="json", reuse_other=False)
    other = _as_if_made_elsewhere(store.save("k1", {"x": 1}), transformers="0.0.1")
    with pytest.warns(UserWarning, match=r"transformers 0\.0\.1 \(now .*\).*recomputing.*ACTTAIL_CACHE_REUSE"):
        assert store.load("k1") is None
    assert other.exists()  # never deleted: another environment may want it
    summary = cache_summary()
    assert summary["ignored_other_environment"] == {"eval": 1} and summary["state"] == "empty"


def test_reuse_of_another_environment_is_explicit_and_recorded(root, monkeypatch):
    from acttail_lab.core.result_cache import cache_summary, reset_cache_summary

    reset_cache_summary()
    _as_if_made_elsewhere(ResultCache("eval").save("k1", {"x": 1}), numpy="0.0.1")
    monkeypatch.setenv("ACTTAIL_CACHE_REUSE", "other-environment")
    with pytest.warns(UserWarning, match="Reusing cached 'eval' results"):
        assert ResultCache("eval").load("k1") == {"x": 1}
    summary = cache_summary()
    assert summary["reused_other_environment"] == {"eval": 1} and summary["state"] == "warm"
    assert summary["reuse_option"] == "other-environment"
    monkeypatch.setenv("ACTTAIL_CACHE_REUSE", "maybe")
    with pytest.raises(ValueError, match="Fix: unset it"):
        ResultCache("eval")


def test_the_stamp_follows_environment_and_measuring_code_not_docstrings(monkeypatch, tmp_path):
    from acttail_lab.core import environment as env

    base = env.cache_stamp("eval", 2)
    assert env.cache_stamp("eval", 3) != base and env.cache_stamp("spectra", 2) != base
    monkeypatch.setattr(env, "environment_versions", lambda: {"torch": "9.9"})
    assert env.cache_stamp("eval", 2) != base
    source = tmp_path / "m.py"
    source.write_text('"""Doc."""\ndef f(x):\n    """Doc."""\n    return round(x)  # comment\n')
    tree = env._code_tree(source)
    source.write_text('"""Other doc."""\n\ndef f(x):\n    return round(x)\n')
    assert env._code_tree(source) == tree
    source.write_text('def f(x):\n    return int(x)\n')
    assert env._code_tree(source) != tree


def test_every_cache_kind_the_package_writes_has_a_measuring_path():
    import re as _re
    from pathlib import Path

    from acttail_lab.core.environment import MEASURING_PATHS, PACKAGE_ROOT, code_version

    kinds = set()
    for path in Path(PACKAGE_ROOT).rglob("*.py"):
        kinds |= set(_re.findall(r'ResultCache\(\s*"([a-z_]+)"', path.read_text()))
    assert kinds and kinds <= set(MEASURING_PATHS), f"no measuring path for {sorted(kinds - set(MEASURING_PATHS))}"
    assert all(code_version(kind) for kind in MEASURING_PATHS)


def test_cache_summary_counts_reads_and_who_made_them(root):
    from acttail_lab.core.environment import made_by
    from acttail_lab.core.result_cache import cache_summary, reset_cache_summary

    reset_cache_summary()
    store = ResultCache("eval")
    store.save("k1", {"x": 1})
    assert cache_summary()["state"] == "empty"
    assert store.load("k1") == {"x": 1}
    summary = cache_summary()
    assert summary["state"] == "warm" and summary["read"] == {"eval": 1} and summary["computed"] == {"eval": 1}
    assert summary["made_by"] == [{"git_sha": made_by()["git_sha"], "git_dirty": made_by()["git_dirty"],
                                   "lock_sha256": made_by()["lock_sha256"], "results": 2}]


def test_the_stamp_covers_the_cpu_kernels(monkeypatch):
    """AVX2 and AVX-512 kernels give other low bits: a result from one is not reused on the other."""
    import torch

    from acttail_lab.core import environment as env

    base = env.environment_versions()
    assert base["kernels"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    stamp = env.cache_stamp("eval", 2)
    env.environment_versions.cache_clear()
    try:
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512_OTHER")
        assert env.cache_stamp("eval", 2) != stamp
        monkeypatch.undo()
        env.environment_versions.cache_clear()
        monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
        assert env.environment_versions()["kernels"]["isa_overrides"] == {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    finally:
        env.environment_versions.cache_clear()
