"""panolam.cache: round trip equals recompute, ``off`` writes nothing, corrupt entries recover,
inputs change the key."""
from __future__ import annotations

import numpy as np
import pytest

from panolam import cache
from panolam.geometry import template as tpl


def _compute(calls: list[int]):
    def compute() -> dict[str, np.ndarray]:
        calls.append(1)
        rng = np.random.default_rng(0)
        return {"a": rng.standard_normal((5, 3)).astype(np.float32), "b": np.arange(7, dtype=np.int64)}
    return compute


def _same(x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> bool:
    return x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and x[k].tobytes() == y[k].tobytes() for k in x)


def test_round_trip_equals_recompute(tmp_path, monkeypatch):
    monkeypatch.setenv("PANOLAM_CACHE_DIR", str(tmp_path))
    calls: list[int] = []
    first = cache.cached_arrays("t", {"n": 1}, _compute(calls))
    second = cache.cached_arrays("t", {"n": 1}, _compute(calls))
    assert len(calls) == 1 and _same(first, second)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_builtin_template_from_cache_is_bit_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("PANOLAM_CACHE_DIR", "off")
    fresh = tpl._builtin_arrays.__wrapped__(600)
    monkeypatch.setenv("PANOLAM_CACHE_DIR", str(tmp_path))
    tpl._builtin_arrays.__wrapped__(600)  # computes and stores
    assert len(list(tmp_path.glob("builtin-template-*.npz"))) == 1
    cached = tpl._builtin_arrays.__wrapped__(600)  # reads
    assert all(a.dtype == b.dtype and a.tobytes() == b.tobytes() for a, b in zip(fresh, cached))


def test_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PANOLAM_CACHE_DIR", "off")
    monkeypatch.setenv("HOME", str(tmp_path))
    calls: list[int] = []
    cache.cached_arrays("t", {"n": 1}, _compute(calls))
    cache.cached_arrays("t", {"n": 1}, _compute(calls))
    assert len(calls) == 2 and list(tmp_path.rglob("*")) == []


@pytest.mark.parametrize("garbage", [b"", b"not a zip file", b"PK\x03\x04truncated"])
def test_corrupt_entry_is_recomputed_and_overwritten(tmp_path, monkeypatch, garbage):
    monkeypatch.setenv("PANOLAM_CACHE_DIR", str(tmp_path))
    calls: list[int] = []
    good = cache.cached_arrays("t", {"n": 1}, _compute(calls))
    (entry,) = tmp_path.glob("t-*.npz")
    entry.write_bytes(garbage)
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = cache.cached_arrays("t", {"n": 1}, _compute(calls))
    assert len(calls) == 2 and _same(good, again)
    assert _same(good, cache.cached_arrays("t", {"n": 1}, _compute(calls))) and len(calls) == 2  # rewritten


def test_entry_with_pickled_objects_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PANOLAM_CACHE_DIR", str(tmp_path))
    calls: list[int] = []
    cache.cached_arrays("t", {"n": 1}, _compute(calls))
    (entry,) = tmp_path.glob("t-*.npz")
    np.savez(entry, a=np.array([{"x": 1}], dtype=object))
    with pytest.warns(RuntimeWarning, match="unreadable"):
        cache.cached_arrays("t", {"n": 1}, _compute(calls))
    assert len(calls) == 2


def test_unwritable_cache_only_warns(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("PANOLAM_CACHE_DIR", str(blocker / "sub"))
    with pytest.warns(RuntimeWarning, match="cannot write"):
        out = cache.cached_arrays("t", {"n": 1}, _compute([]))
    assert out["b"].tolist() == list(range(7))


def test_different_inputs_different_keys():
    keys = {cache.cache_key("t", {"n": 1}), cache.cache_key("t", {"n": 2}), cache.cache_key("u", {"n": 1}),
            cache.cache_key("t", {"n": 1, "source": "x"})}
    assert len(keys) == 4
    assert cache.cache_key("t", {"a": 1, "b": 2}) == cache.cache_key("t", {"b": 2, "a": 1})


def test_default_dir_and_off(monkeypatch, tmp_path):
    monkeypatch.delenv("PANOLAM_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / ".cache" / "panolam"
    monkeypatch.setenv("PANOLAM_CACHE_DIR", "OFF")
    assert cache.cache_dir() is None
